"""Pure parsing and rendering of OpenAI legacy Completions (`/v1/completions`). No I/O.

Wire shapes follow docs/design.md §5.4: `text_completion` objects, streamed as chunks of
the same object type with one id, `finish_reason` on the last text chunk, an optional usage chunk
with `choices: []`, then `[DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from services.core.errors import InvalidRequestError, UpstreamError
from services.core.types import (
    REPLACE_SEPARATOR,
    ChatDelta,
    ChatResult,
    StreamStats,
    TextRequest,
    Usage,
    new_id,
)
from services.faces.chat_reply import encode_json, guard_stream, render_usage
from services.faces.chat_request import (
    not_int,
    opt_bool,
    opt_int,
    opt_number,
    parse_include_usage,
    parse_stop,
    requested_model,
)
from services.faces.extension_fields import COMPLETION_FIELDS, check_extension_fields

# Request fields parse_completion_request reads itself; the rest lands in TextRequest.extra
# (Ollama's `options`, `keep_alive`, `raw`; Dify's `inputs`; `logit_bias` is ignored).
_KNOWN = {
    "model",
    "prompt",
    "suffix",
    "max_tokens",
    "stop",
    "echo",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "best_of",
    "logprobs",
    "user",
}
TOKEN_PROMPT = (
    "Token-id prompts are not supported: Relay's backends tokenize text themselves and OpenAI's "
    "token ids mean nothing to them. Send 'prompt' as a string or a list of strings."
)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A /v1/completions call: one TextRequest per prompt, plus how to answer."""

    model: str
    prompts: tuple[TextRequest, ...]
    stream: bool = False
    echo: bool = False
    include_usage: bool = False


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate an OpenAI completions body and turn it into one TextRequest per prompt."""
    model = requested_model(body)
    check_extension_fields(body, COMPLETION_FIELDS)
    prompts = _parse_prompt(body.get("prompt"))
    for name in ("n", "best_of"):
        value = body.get(name)
        if value is not None and (not_int(value) or value != 1):
            raise InvalidRequestError(
                f"Only {name}=1 is supported: Relay returns one choice per prompt.", param=name
            )
    if body.get("logprobs") not in (None, 0):
        raise InvalidRequestError(
            "Relay does not return log probabilities; leave 'logprobs' out.", param="logprobs"
        )
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise InvalidRequestError("'suffix' must be a string.", param="suffix")
    include_usage = parse_include_usage(body)
    user = body.get("user")
    template = TextRequest(
        model=model,
        prompt="",
        suffix=suffix or None,
        max_tokens=opt_int(body, "max_tokens", lo=1),
        stop=parse_stop(body.get("stop")),
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        seed=opt_int(body, "seed"),
        presence_penalty=opt_number(body, "presence_penalty", -2, 2),
        frequency_penalty=opt_number(body, "frequency_penalty", -2, 2),
        user=user or None,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )
    return CompletionRequest(
        model=template.model,
        prompts=tuple(replace(template, prompt=p) for p in prompts),
        stream=opt_bool(body, "stream") or False,
        echo=opt_bool(body, "echo") or False,
        include_usage=include_usage,
    )


def _parse_prompt(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if raw is None:
        raise InvalidRequestError("'prompt' is required.", param="prompt")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            "'prompt' must be a string or a non-empty array of strings.", param="prompt"
        )
    if all(isinstance(p, str) for p in raw):
        return tuple(raw)
    if all(isinstance(p, int | list) for p in raw):
        raise InvalidRequestError(TOKEN_PROMPT, param="prompt", code="token_prompt_unsupported")
    raise InvalidRequestError("'prompt' must hold only strings.", param="prompt")


def render_completion(results: list[ChatResult], req: CompletionRequest) -> dict[str, Any]:
    """Render finished prompts as one OpenAI text_completion object, a choice per prompt."""
    choices = [
        {
            "text": (p.prompt if req.echo else "") + r.content,
            "index": i,
            "logprobs": None,
            "finish_reason": r.finish_reason,
        }
        for i, (p, r) in enumerate(zip(req.prompts, results, strict=True))
    ]
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": render_usage(total_usage(results)),
    }


def total_usage(results: list[ChatResult]) -> Usage:
    """Add up the token counts of every prompt's result."""
    return Usage(
        sum(r.usage.prompt_tokens for r in results),
        sum(r.usage.completion_tokens for r in results),
    )


def render_completion_stream(
    deltas: Iterator[tuple[int, ChatDelta]], req: CompletionRequest, stats: StreamStats
) -> Iterator[bytes]:
    """Turn (prompt index, delta) pairs into encoded text_completion SSE frames, then [DONE].

    Each text fragment is held back until the next one arrives, so that `finish_reason` can
    ride on the last text chunk as OpenAI sends it; reasoning is not part of the text.
    """
    return guard_stream(_completion_frames(deltas, req, stats), stats)


def _completion_frames(
    deltas: Iterator[tuple[int, ChatDelta]], req: CompletionRequest, stats: StreamStats
) -> Iterator[bytes]:
    head = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": None,
    }
    tail = {"usage": None} if req.include_usage else {}

    def frame(index: int, text: str, finish: str | None = None) -> bytes:
        stats.chunks += 1
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return b"data: " + encode_json({**head, "choices": [choice], **tail}) + b"\n\n"

    pending: str | None = None
    current, sent_text = -1, False
    prompt_tokens = completion_tokens = 0
    for index, d in deltas:
        if index != current:  # the next prompt starts
            current, sent_text = index, False
            pending = req.prompts[index].prompt if req.echo else None
        text = d.content
        if d.replace and sent_text:
            text = REPLACE_SEPARATOR + text
        if text:
            if pending:
                yield frame(index, pending)
            pending, sent_text = text, True
        if d.finish_reason is not None:
            usage = d.usage or Usage()
            prompt_tokens += usage.prompt_tokens
            completion_tokens += usage.completion_tokens
            stats.finish_reason = d.finish_reason
            stats.usage = Usage(prompt_tokens, completion_tokens)
            yield frame(index, pending or "", d.finish_reason)
            pending = None
            if index == len(req.prompts) - 1:
                if req.include_usage:
                    usage_json = render_usage(stats.usage)
                    yield (
                        b"data: "
                        + encode_json({**head, "choices": [], "usage": usage_json})
                        + b"\n\n"
                    )
                yield b"data: [DONE]\n\n"
                return
    raise UpstreamError("The backend's stream ended before the reply was complete.")
