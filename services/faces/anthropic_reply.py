"""Pure rendering of core results as Anthropic Messages API JSON and SSE events. Cannot fail.

The event grammar and the error envelope are described in docs/anthropic.md "Streaming" and
"Errors".
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
    ModelInfo,
    StreamStats,
    ToolCall,
    Usage,
    new_id,
)
from services.faces.chat_reply import encode_json

PING = b'event: ping\ndata: {"type":"ping"}\n\n'

# Anthropic's error type for each status the SDKs map to an exception class.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def render_error(error: GatewayError) -> dict[str, Any]:
    """Anthropic's error envelope."""
    return {
        "type": "error",
        "error": {"type": error_type(error.status), "message": error.message},
    }


def stop_reason(finish_reason: str | None, called_tools: bool, refused: bool) -> str:
    if called_tools:
        return "tool_use"
    if finish_reason == "length":
        return "max_tokens"
    if refused or finish_reason == "content_filter":
        return "refusal"
    return "end_turn"


def render_usage(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens or 0,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """The core's JSON arguments as the object Anthropic's `input` is; kept when not an object."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def tool_use_id(call: ToolCall) -> str:
    return call.id if call.id.startswith("toolu_") else new_id("toolu_")


def render_message(result: ChatResult, model: str) -> dict[str, Any]:
    """A finished turn as an Anthropic Message object."""
    content: list[dict[str, Any]] = []
    if result.reasoning:
        content.append({"type": "thinking", "thinking": result.reasoning, "signature": ""})
    text = result.content or result.refusal
    if text:  # never an empty text block: a client replaying the turn would be refused
        content.append({"type": "text", "text": text})
    for call in result.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call),
                "name": call.name,
                "input": tool_input(call.arguments),
            }
        )
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(
            result.finish_reason, bool(result.tool_calls), bool(result.refusal)
        ),
        "stop_sequence": None,
        "usage": render_usage(result.usage),
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event: the `event:` name (the SDKs need it) and its JSON, whose type is the name."""
    return b"event: " + name.encode() + b"\ndata: " + encode_json(data) + b"\n\n"


def render_error_event(error: GatewayError) -> bytes:
    return event("error", render_error(error))


class _Blocks:
    """The content blocks of a streamed message: one open at a time, indexes from 0.

    Tool calls are held until complete (an OpenAI-compatible upstream streams their arguments
    in pieces, and calls may interleave), then sent as start, one input_json_delta, stop.
    """

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.index = -1
        self.open: str | None = None  # "text" or "thinking"
        self.tools: dict[int, list[str]] = {}  # core index -> [id, name, arguments so far]
        self.called = False

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        self.stats.chunks += 1
        if self.stats.first_token is None and name == "content_block_delta":
            self.stats.first_token = time.perf_counter()
        return event(name, data)

    def close(self) -> Iterator[bytes]:
        if self.open == "thinking":  # no signature: nothing Relay could sign or check
            delta = {"type": "signature_delta", "signature": ""}
            yield self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta},
            )
        if self.open is not None:
            yield self._event(
                "content_block_stop", {"type": "content_block_stop", "index": self.index}
            )
        self.open = None

    def say(self, kind: str, text: str) -> Iterator[bytes]:
        if self.open != kind:
            yield from self.flush()
            self.index += 1
            self.open = kind
            block = {"type": kind, kind: ""}
            if kind == "thinking":
                block["signature"] = ""
            yield self._event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        yield self._text_delta(kind, text)

    def _text_delta(self, kind: str, text: str) -> bytes:
        """The event of most chunks, written from its parts with only the text encoded: the
        bytes `event()` gives, key for key (`kind` is `text` or `thinking`)."""
        self.stats.chunks += 1
        if self.stats.first_token is None:
            self.stats.first_token = time.perf_counter()
        name = kind.encode()
        return b"".join(
            (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":',
                str(self.index).encode(),
                b',"delta":{"type":"',
                name,
                b'_delta","',
                name,
                b'":',
                encode_json(text),
                b"}}\n\n",
            )
        )

    def call(self, call: ToolCall) -> Iterator[bytes]:
        yield from self.close()
        held = self.tools.get(call.index)
        if held is None:
            self.tools[call.index] = [call.id, call.name, call.arguments]
        else:
            held[0] = held[0] or call.id
            held[1] = held[1] or call.name
            held[2] += call.arguments

    def flush(self) -> Iterator[bytes]:
        """Close the open block and send the held tool calls."""
        yield from self.close()
        for index in sorted(self.tools):
            call_id, name, arguments = self.tools[index]
            self.index += 1
            self.called = True
            block = {
                "type": "tool_use",
                "id": tool_use_id(ToolCall(call_id, name, arguments, index)),
                "name": name,
                "input": {},
            }
            yield self._event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
            # Always one input_json_delta, even for `{}`: without it a client sees no input.
            partial = json.dumps(tool_input(arguments), ensure_ascii=False)
            delta = {"type": "input_json_delta", "partial_json": partial}
            yield self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta},
            )
            yield self._event(
                "content_block_stop", {"type": "content_block_stop", "index": self.index}
            )
        self.tools.clear()


def render_stream(
    deltas: Iterator[ChatDelta], model: str, input_estimate: int, stats: StreamStats
) -> Iterator[bytes]:
    """Core deltas as Anthropic's events: message_start, blocks, message_delta, message_stop.

    A failure after the first event ends the stream with one `error` event.
    """
    blocks = _Blocks(stats)
    sent_text = refused = False
    try:
        start: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": render_usage(Usage(prompt_tokens=input_estimate)),
        }
        yield event("message_start", {"type": "message_start", "message": start})
        for d in deltas:
            if d.reasoning:
                yield from blocks.say("thinking", d.reasoning)
            text = d.content
            if text and d.replace and sent_text:
                text = REPLACE_SEPARATOR + text
            if d.refusal:
                refused = True
                text += d.refusal
            if text:
                sent_text = True
                yield from blocks.say("text", text)
            for call in d.tool_calls:
                yield from blocks.call(call)
            if d.finish_reason is not None:
                yield from blocks.flush()
                stats.finish_reason, stats.usage = d.finish_reason, d.usage
                reason = stop_reason(d.finish_reason, blocks.called, refused)
                yield event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": None},
                        "usage": render_usage(d.usage),
                    },
                )
                yield event("message_stop", {"type": "message_stop"})
                return
        raise UpstreamError("The backend's stream ended before the reply was complete.")
    except GatewayError as e:
        stats.error = e.message
        yield render_error_event(e)
    except Exception:  # a bug of ours: log it, end the stream with a clean event
        logger.exception("stream failed")
        stats.error = "internal error"
        yield render_error_event(GatewayError("Relay failed while streaming the reply."))


# --- models ------------------------------------------------------------------------------------


def render_model_info(info: ModelInfo) -> dict[str, Any]:
    created = datetime.fromtimestamp(max(info.created, 0), UTC)
    return {
        "type": "model",
        "id": info.id,
        "display_name": info.id,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def render_model_page(models: list[ModelInfo]) -> dict[str, Any]:
    """Every model on one page; `has_more` false, or the SDK's pager would ask again forever."""
    data = [render_model_info(m) for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
