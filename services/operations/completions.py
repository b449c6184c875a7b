"""Legacy completions use cases: route the prompts to a backend, run them whole or streamed.

Several prompts run one after the other on the same backend; a stream carries each delta with
the index of its prompt.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Generator

from services.backends.base import Backend
from services.common.unicode_text import escape_surrogates
from services.core import pipeline
from services.core.gateway import Gateway
from services.core.pipeline import Call, Outcome, Streamed
from services.core.routes import Target
from services.core.types import CallContext, ChatDelta, ChatResult, TextRequest
from services.core.usage_estimate import complete_usage, fill_usage, text_tokens
from services.faces.completions import CompletionRequest
from services.operations.chat_cache import by_sampling, deterministic, result_from_dict
from services.state.reply_cache import Codec, cache_key


def _encode(results: list[ChatResult]) -> bytes:
    data = [dataclasses.asdict(r) for r in results]
    for d in data:
        del d["headers"]  # a backend's response headers belong to that one call
    text = json.dumps(data, ensure_ascii=False)
    return escape_surrogates(text).encode()  # an upstream's lone surrogate, escaped


def _decode(raw: bytes) -> list[ChatResult]:
    return [result_from_dict(r) for r in json.loads(raw)]


# Replies cut off by the token limit are not stored, as for chat.
COMPLETIONS_CODEC = Codec(_encode, _decode, lambda rs: all(r.finish_reason != "length" for r in rs))


def _payload(req: CompletionRequest, target: Target) -> dict[str, object]:
    skip = {"user"}
    return {
        "prompts": [
            {k: v for k, v in dataclasses.asdict(target.fit(p)).items() if k not in skip}
            for p in req.prompts
        ]
    }


def _prompt(req: TextRequest) -> int:
    return text_tokens(req.prompt) + text_tokens(req.suffix or "")


def _stream_text(
    backend: Backend, req: TextRequest, ctx: CallContext
) -> Generator[ChatDelta, None, None]:
    return fill_usage(backend.stream_text(req, ctx), _prompt(req))


def complete(gw: Gateway, call: Call, req: CompletionRequest) -> Outcome[list[ChatResult]]:
    """Continue every prompt whole, or answer from the cache (deterministic ones only, by
    RELAY_CACHE_MODE)."""
    call = by_sampling(gw, call, all(deterministic(p) for p in req.prompts))
    out = pipeline.run(
        gw,
        call,
        lambda t: cache_key("completions", call.policy.tenant, t.backend.name, _payload(req, t)),
        COMPLETIONS_CODEC,
        lambda t: [
            complete_usage(t.backend.complete_text(t.fit(p), call.ctx), _prompt(p))
            for p in req.prompts
        ],
    )
    headers = {k: v for r in out.result for k, v in r.headers.items()}
    return dataclasses.replace(out, headers=headers)


def stream(gw: Gateway, call: Call, req: CompletionRequest) -> Streamed[tuple[int, ChatDelta]]:
    """Start streaming the prompts; the first delta is pulled now so errors come before headers."""
    target, first, deltas = pipeline.stream(gw, call, lambda t: _run(t, req, call.ctx))
    headers = first[1].headers if first is not None and first[1].headers else {}
    return Streamed(target.backend.name, deltas, None, headers, target.name)


def _run(
    target: Target, req: CompletionRequest, ctx: CallContext
) -> Generator[tuple[int, ChatDelta], None, None]:
    # Several prompts one after the other; a plain generator with finally, so close() reaches
    # the upstream at once when the client goes away (docs/design.md §4.2).
    backend = target.backend
    current = _stream_text(backend, target.fit(req.prompts[0]), ctx)
    try:
        for delta in current:
            yield 0, delta
        for index in range(1, len(req.prompts)):
            current.close()
            current = _stream_text(backend, target.fit(req.prompts[index]), ctx)
            for delta in current:
                yield index, delta
    finally:
        current.close()
