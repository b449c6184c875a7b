"""Pure rendering of core results as OpenAI Chat Completions JSON and SSE frames. Cannot fail.

Wire details follow docs/design.md §5.1 (chunk rules, null vs missing, error frames).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from loguru import logger

from services.common.unicode_text import escape_surrogates
from services.core.errors import GatewayError, UpstreamError
from services.core.types import (
    REPLACE_SEPARATOR,
    ChatDelta,
    ChatResult,
    Message,
    StreamStats,
    ToolCall,
    Usage,
    new_id,
)


def render_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def render_message(m: Message) -> dict[str, Any]:
    """A core message in chat format, as it goes to an OpenAI-compatible upstream."""
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, tuple):
        out["content"] = [
            {"type": "text", "text": p.text}
            if p.type == "text"
            else {"type": "image_url", "image_url": {"url": p.url}}
            for p in m.content
        ]
    else:
        out["content"] = m.content
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [render_tool_call(c) for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def render_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def render_chat_completion(result: ChatResult, model: str) -> dict[str, Any]:
    """Render a finished turn as an OpenAI chat.completion object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.content or (None if result.tool_calls or result.refusal else ""),
        "refusal": result.refusal or None,
    }
    if result.tool_calls:
        message["tool_calls"] = [render_tool_call(c) for c in result.tool_calls]
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": dict(result.logprobs) if result.logprobs else None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": render_usage(result.usage),
    }


def render_error_frame(error: GatewayError) -> bytes:
    return b"data: " + encode_json(error.to_dict()) + b"\n\n"


def guard_stream(frames: Iterator[bytes], stats: StreamStats) -> Iterator[bytes]:
    """Pass frames on; a failure ends the stream with one error frame (docs/design.md §5.2)."""
    try:
        yield from frames
    except GatewayError as e:
        stats.error = e.message
        yield render_error_frame(e)
    except Exception:  # a bug of ours: log it, end the stream with a clean frame
        logger.exception("stream failed")
        stats.error = "internal error"
        yield render_error_frame(GatewayError("Relay failed while streaming the reply."))


def render_chat_stream(
    deltas: Iterator[ChatDelta], model: str, include_usage: bool, stats: StreamStats
) -> Iterator[bytes]:
    """Turn core deltas into encoded SSE frames: role, content, finish, usage, [DONE]."""
    head = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }
    # Every chunk is the same object but for its delta, logprobs and finish reason: its bytes
    # are encoded once and only the parts that change are encoded per chunk. The output is
    # what encoding the whole object gives, key for key (docs/design.md §5.1).
    opening = b"data: " + encode_json(head)[:-1] + b',"choices":[{"index":0,"delta":'
    closing = b"}]" + (b',"usage":null}\n\n' if include_usage else b"}\n\n")

    def frame(delta: bytes, finish: str | None = None, logprobs: Any = None) -> bytes:
        stats.chunks += 1
        if stats.first_token is None and stats.chunks > 1:  # the role chunk is not a token
            stats.first_token = time.perf_counter()
        return b"".join(
            (
                opening,
                delta,
                b',"logprobs":',
                b"null" if logprobs is None else encode_json(logprobs),
                b',"finish_reason":',
                b"null" if finish is None else encode_json(finish),
                closing,
            )
        )

    seen_tools: set[int] = set()
    sent_text = False
    try:
        yield frame(b'{"role":"assistant","content":""}')
        for d in deltas:
            if d.reasoning:
                yield frame(b'{"reasoning_content":' + encode_json(d.reasoning) + b"}")
            if d.refusal:
                yield frame(b'{"refusal":' + encode_json(d.refusal) + b"}")
            if d.content:
                text = REPLACE_SEPARATOR + d.content if d.replace and sent_text else d.content
                sent_text = True
                yield frame(b'{"content":' + encode_json(text) + b"}", None, _plain(d.logprobs))
            elif d.logprobs and not (d.reasoning or d.refusal or d.tool_calls):
                yield frame(b"{}", None, _plain(d.logprobs))
            if d.tool_calls:
                calls = [_tool_delta(c, seen_tools) for c in d.tool_calls]
                yield frame(encode_json({"tool_calls": calls}))
            if d.finish_reason is not None:
                stats.finish_reason, stats.usage = d.finish_reason, d.usage
                yield frame(b"{}", d.finish_reason)
                if include_usage:
                    usage = render_usage(d.usage or Usage())
                    yield b"data: " + encode_json({**head, "choices": [], "usage": usage}) + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
        raise UpstreamError("The backend's stream ended before the reply was complete.")
    except GatewayError as e:
        stats.error = e.message
        yield render_error_frame(e)
    except Exception:  # a bug of ours: log it, end the stream with a clean frame
        logger.exception("stream failed")
        stats.error = "internal error"
        yield render_error_frame(GatewayError("Relay failed while streaming the reply."))


def _plain(logprobs: Any) -> Any:
    return dict(logprobs) if logprobs else None


def _tool_delta(call: ToolCall, seen: set[int]) -> dict[str, Any]:
    # id, type and name go only in the first delta of each index: the Python SDK's
    # accumulator would otherwise join them ("call_xcall_x"), docs/design.md §5.1.
    if call.index in seen:
        return {"index": call.index, "function": {"arguments": call.arguments}}
    seen.add(call.index)
    return {"index": call.index, **render_tool_call(call)}


def encode_json(obj: Any) -> bytes:
    """Encode compact UTF-8 JSON, as OpenAI sends it; NaN and Infinity raise, they are not JSON."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return escape_surrogates(text).encode()  # a lone surrogate from an upstream, escaped
