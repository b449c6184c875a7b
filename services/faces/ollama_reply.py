"""Pure rendering of core results as Ollama's native API answers. Cannot fail.

Streams are NDJSON (`application/x-ndjson`): one object per line, the last with `done: true`,
`done_reason`, the token counts and the durations in nanoseconds; a failure after the first
line is one `{"error": "..."}` line and nothing after it. Errors are `{"error": "<text>"}`
(docs/ollama.md).

Durations are what Relay measured: `total_duration` from the request's arrival to the end,
`prompt_eval_duration` until the first token, `eval_duration` from there to the end; metrics
that are 0 or unknown are left out, as Ollama leaves out zero ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from services.core.errors import GatewayError, UpstreamError
from services.core.types import (
    REPLACE_SEPARATOR,
    ChatDelta,
    ChatResult,
    EmbeddingResult,
    ModelInfo,
    StreamStats,
    ToolCall,
    Usage,
)
from services.faces.chat_reply import encode_json

MEDIA_TYPE = "application/x-ndjson"


def created_at() -> str:
    """Now in RFC 3339 with nanoseconds, in UTC, as Ollama stamps every object."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def render_error(error: GatewayError) -> dict[str, Any]:
    return {"error": error.message}


def error_line(error: GatewayError) -> bytes:
    return encode_json(render_error(error)) + b"\n"


def done_reason(finish_reason: str | None) -> str:
    # Ollama has no tool_calls reason: a turn that called tools ends with "stop".
    return "length" if finish_reason == "length" else "stop"


def metrics(usage: Usage | None, started: float, first_token: float | None) -> dict[str, int]:
    """The final object's counts and durations; zero ones left out (omitempty)."""
    now = time.perf_counter()
    usage = usage or Usage()
    values = {
        "total_duration": int((now - started) * 1e9),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": int((first_token - started) * 1e9) if first_token else 0,
        "eval_count": usage.completion_tokens,
        "eval_duration": int((now - first_token) * 1e9) if first_token else 0,
    }
    return {k: v for k, v in values.items() if v > 0}


def render_tool_call(call: ToolCall) -> dict[str, Any]:
    """A tool call as Ollama sends it: arguments as an object, `index` inside `function`."""
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        logger.warning("tool call {} had arguments that are not a JSON object", call.name)
        arguments = {}
    out: dict[str, Any] = {
        "function": {"index": call.index, "name": call.name, "arguments": arguments}
    }
    return {"id": call.id, **out} if call.id else out


def _message(content: str, reasoning: str, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["thinking"] = reasoning
    if calls:
        message["tool_calls"] = [render_tool_call(c) for c in calls]
    return message


def render_chat(result: ChatResult, model: str, started: float) -> dict[str, Any]:
    """A whole /api/chat answer (`stream: false`)."""
    content = result.content or result.refusal
    return {
        "model": model,
        "created_at": created_at(),
        "message": _message(content, result.reasoning, result.tool_calls),
        "done": True,
        "done_reason": done_reason(result.finish_reason),
        **metrics(result.usage, started, None),
    }


def render_generate(result: ChatResult, model: str, started: float) -> dict[str, Any]:
    """A whole /api/generate answer (`stream: false`)."""
    out: dict[str, Any] = {
        "model": model,
        "created_at": created_at(),
        "response": result.content or result.refusal,
    }
    if result.reasoning:
        out["thinking"] = result.reasoning
    out.update(done=True, done_reason=done_reason(result.finish_reason))
    out.update(metrics(result.usage, started, None))
    return out


def render_chat_stream(
    deltas: Iterator[ChatDelta], model: str, stats: StreamStats, started: float
) -> Iterator[bytes]:
    """Core deltas as /api/chat NDJSON lines."""
    # A line of text alone is written from its parts, encoded once: the bytes encoding the
    # whole object gives, key for key; `created_at` is ASCII digits and punctuation.
    opening = b'{"model":' + encode_json(model) + b',"created_at":"'
    text = b'","message":{"role":"assistant","content":'

    def line(content: str, reasoning: str, calls: tuple[ToolCall, ...]) -> dict[str, Any] | bytes:
        if not reasoning and not calls:
            when = created_at().encode()
            return b"".join((opening, when, text, encode_json(content), b'},"done":false}\n'))
        message = _message(content, reasoning, calls)
        return {"model": model, "created_at": created_at(), "message": message, "done": False}

    def final(d: ChatDelta) -> dict[str, Any]:
        head = {"model": model, "created_at": created_at()}
        return {**head, "message": {"role": "assistant", "content": ""}, "done": True}

    return _stream(deltas, stats, started, line, final)


def render_generate_stream(
    deltas: Iterator[ChatDelta], model: str, stats: StreamStats, started: float
) -> Iterator[bytes]:
    """Core deltas as /api/generate NDJSON lines."""

    def line(content: str, reasoning: str, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": created_at(), "response": content}
        if reasoning:
            out["thinking"] = reasoning
        return {**out, "done": False}

    def final(d: ChatDelta) -> dict[str, Any]:
        return {"model": model, "created_at": created_at(), "response": "", "done": True}

    return _stream(deltas, stats, started, line, final)


def _stream(
    deltas: Iterator[ChatDelta],
    stats: StreamStats,
    started: float,
    line: Any,
    final: Any,
) -> Iterator[bytes]:
    sent_text = False
    try:
        for d in deltas:
            content = d.content or d.refusal
            if d.replace and sent_text and content:
                content = REPLACE_SEPARATOR + content
            if content or d.reasoning or d.tool_calls:
                sent_text = sent_text or bool(content)
                stats.chunks += 1
                if stats.first_token is None:
                    stats.first_token = time.perf_counter()
                piece = line(content, d.reasoning, d.tool_calls)
                yield piece if isinstance(piece, bytes) else encode_json(piece) + b"\n"
            if d.finish_reason is not None:
                stats.finish_reason, stats.usage = d.finish_reason, d.usage
                out = final(d)
                out["done_reason"] = done_reason(d.finish_reason)
                out.update(metrics(d.usage, started, stats.first_token))
                yield encode_json(out) + b"\n"
                return
        raise UpstreamError("The backend's stream ended before the reply was complete.")
    except GatewayError as e:
        stats.error = e.message
        yield error_line(e)
    except Exception:  # a bug of ours: log it, end the stream with a clean error line
        logger.exception("stream failed")
        stats.error = "internal error"
        yield error_line(GatewayError("Relay failed while streaming the reply."))


def failed_stream(deltas: Iterator[Any], stats: StreamStats) -> Iterator[bytes]:
    """A stream that failed after its headers went out: one error line."""
    return _stream(deltas, stats, time.perf_counter(), None, None)


# --- embeddings ---------------------------------------------------------------------------


def render_embed(result: EmbeddingResult, model: str, started: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "embeddings": [list(v) for v in result.vectors],
        "total_duration": int((time.perf_counter() - started) * 1e9),
    }
    if result.prompt_tokens:
        out["prompt_eval_count"] = result.prompt_tokens
    return out


def render_embeddings(result: EmbeddingResult) -> dict[str, Any]:
    """The legacy /api/embeddings answer: one vector, no counts."""
    return {"embedding": list(result.vectors[0]) if result.vectors else []}


# --- model information --------------------------------------------------------------------

_DETAILS = {
    "parent_model": "",
    "format": "",
    "family": "",
    "families": None,
    "parameter_size": "",
    "quantization_level": "",
}


def _stamp(unix: int) -> str:
    return datetime.fromtimestamp(max(unix, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_tag(model: ModelInfo) -> dict[str, Any]:
    """A /api/tags entry for a model that is not on an Ollama backend (no size, no digest)."""
    return {
        "name": model.id,
        "model": model.id,
        "modified_at": _stamp(model.created),
        "size": 0,
        "digest": "",
        "details": dict(_DETAILS),
    }


def render_show(model: ModelInfo | None) -> dict[str, Any]:
    """A minimal /api/show answer for a model that is not on an Ollama backend."""
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": dict(_DETAILS),
        "model_info": {},
        "capabilities": ["completion"],
        "modified_at": _stamp(model.created if model else 0),
    }
