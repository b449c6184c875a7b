"""Pure rendering of chat results as Responses API objects and stream events. No I/O.

The event sequence and the fields the SDK helpers depend on follow docs/design.md
§5.6: response.created first, output_index equal to the item's position, content parts
added before text deltas, function_call items added with empty arguments, and a terminal
response.completed / incomplete / failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from loguru import logger

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
from services.faces.chat_reply import encode_json
from services.faces.responses_request import ResponsesRequest


def render_response(
    rreq: ResponsesRequest,
    rid: str,
    created: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    error: GatewayError | None = None,
) -> dict[str, Any]:
    """Render a whole Response object in any state."""
    usage = usage or Usage()
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": {"code": error.code or "server_error", "message": error.message}
        if error
        else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": rreq.instructions,
        "model": rreq.model,
        "output": output,
        "output_text": "".join(
            part["text"]
            for item in output
            if item["type"] == "message"
            for part in item["content"]
            if part["type"] == "output_text"
        ),
        "previous_response_id": rreq.previous_response_id,
        "store": rreq.store,
        "truncation": "disabled",
        "metadata": dict(rreq.metadata),
        **rreq.echo,
        "usage": {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens or 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
            "total_tokens": usage.total_tokens,
        },
    }


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    """Render a finished chat turn as Responses output items."""
    items = []
    if result.reasoning:
        items.append(_reasoning_item(new_id("rs_"), result.reasoning))
    if result.content or result.refusal:
        # A chat refusal is the message's refusal part (docs/design.md §6).
        parts = [_text_part(result.content)] if result.content else []
        parts += [_refusal_part(result.refusal)] if result.refusal else []
        items.append(_message_item(new_id("msg_"), parts, "completed"))
    items.extend(_call_item(new_id("fc_"), c, "completed") for c in result.tool_calls)
    return items


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def assistant_message(output: list[dict[str, Any]]) -> Message:
    """The core message a response's output becomes in a later turn's history.

    Its reasoning is not part of it: earlier reasoning is not replayed to chat backends, as for
    `reasoning` items in `input` (the Response object keeps it).
    """
    text = "".join(
        p.get("text") or p.get("refusal") or ""
        for i in output
        if i["type"] == "message"
        for p in i["content"]
    )
    calls = [i for i in output if i["type"] == "function_call"]
    return Message(
        role="assistant",
        content=text or None,
        tool_calls=tuple(
            ToolCall(id=c["call_id"], name=c["name"], arguments=c["arguments"], index=j)
            for j, c in enumerate(calls)
        ),
    )


class ResponseEvents:
    """Turn chat deltas into Responses stream events; call `on_done` with the final response."""

    def __init__(
        self,
        rreq: ResponsesRequest,
        stats: StreamStats,
        on_done: Callable[[dict[str, Any]], None],
    ) -> None:
        self.rreq, self.stats, self.on_done = rreq, stats, on_done
        self.rid, self.created = new_id("resp_"), int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the reasoning or message item being written
        self.calls: dict[int, dict[str, Any]] = {}
        # Text still to be added to one field of the output (a part's text, a call's
        # arguments): `field += delta` per chunk would copy the whole text each time.
        self.pending: list[str] = []
        self.pending_at: tuple[dict[str, Any], str] | None = None

    def _append(self, target: dict[str, Any], name: str, text: str) -> None:
        if (
            self.pending_at is None
            or self.pending_at[0] is not target
            or self.pending_at[1] != name
        ):
            self._flush()
            self.pending_at = (target, name)
        self.pending.append(text)

    def _flush(self) -> None:
        """Write the pending text into its field: before any event or snapshot that shows it."""
        if self.pending_at is not None:
            target, name = self.pending_at
            target[name] += "".join(self.pending)
            self.pending.clear()
            self.pending_at = None

    def frames(self, deltas: Iterator[ChatDelta]) -> Iterator[bytes]:
        """Yield the encoded `event:`/`data:` frames of the whole stream."""
        yield self._event("response.created", response=self._snapshot("in_progress"))
        yield self._event("response.in_progress", response=self._snapshot("in_progress"))
        try:
            for d in deltas:
                if self.stats.first_token is None:
                    self.stats.first_token = time.perf_counter()
                if d.reasoning:
                    yield from self._write("reasoning", d.reasoning)
                if d.content:
                    yield from self._write("message", d.content, d.replace)
                if d.refusal:
                    yield from self._write("refusal", d.refusal)
                for call in d.tool_calls:
                    yield from self._call(call)
                if d.finish_reason is not None:
                    yield from self._finish(d)
                    return
            raise UpstreamError("The backend's stream ended before the reply was complete.")
        except GatewayError as e:
            self.stats.error = e.message
            yield from self._close_open()
            failed = self._snapshot("failed", error=e)
            yield self._event("response.failed", response=failed)
        except Exception:  # a bug of ours: log it, end the stream with a clean event
            logger.exception("responses stream failed")
            self.stats.error = "internal error"
            failed = self._snapshot("failed", error=GatewayError("Relay failed while streaming."))
            yield self._event("response.failed", response=failed)

    def _finish(self, d: ChatDelta) -> Iterator[bytes]:
        yield from self._close_open()
        for call in self.calls.values():
            index = self.output.index(call)
            yield self._event(
                "response.function_call_arguments.done",
                item_id=call["id"],
                output_index=index,
                name=call["name"],
                arguments=call["arguments"],
            )
            call["status"] = "completed"
            yield self._event("response.output_item.done", output_index=index, item=call)
        self.stats.usage, self.stats.finish_reason = d.usage, d.finish_reason
        status = status_of(d.finish_reason)
        final = self._snapshot(status, usage=d.usage)
        self.on_done(final)
        yield self._event(f"response.{status}", response=final)

    def _write(self, kind: str, text: str, replace: bool = False) -> Iterator[bytes]:
        """Append text to the open item: reasoning, or a message's text or refusal part."""
        item_type = "reasoning" if kind == "reasoning" else "message"
        item = self.open
        if item is None or item["type"] != item_type:
            yield from self._close_open()
            item = self.open = self._open(item_type)
            yield from self._added(item)
        elif replace:
            text = REPLACE_SEPARATOR + text  # a stream cannot take back what it sent
        index = self.output.index(item)
        if item_type == "reasoning":
            self._append(item["summary"][0], "text", text)
            yield self._event(
                "response.reasoning_summary_text.delta",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                delta=text,
            )
            return
        part_type = "refusal" if kind == "refusal" else "output_text"
        parts = item["content"]
        if not parts or parts[-1]["type"] != part_type:
            if parts:
                yield from self._close_part(item)
            self._flush()
            parts.append(_refusal_part("") if kind == "refusal" else _text_part(""))
            yield self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=len(parts) - 1,
                part=dict(parts[-1]),
            )
        if kind == "refusal":
            self._append(parts[-1], "refusal", text)
            yield self._event(
                "response.refusal.delta",
                item_id=item["id"],
                output_index=index,
                content_index=len(parts) - 1,
                delta=text,
            )
        else:
            self._append(parts[-1], "text", text)
            yield self._text_delta(item["id"], index, len(parts) - 1, text)

    def _open(self, kind: str) -> dict[str, Any]:
        if kind == "message":
            item = _message_item(new_id("msg_"), [], "in_progress")
        else:
            item = _reasoning_item(new_id("rs_"), "")
        self.output.append(item)
        return item

    def _added(self, item: dict[str, Any]) -> Iterator[bytes]:
        index = self.output.index(item)
        if item["type"] == "message":
            yield self._event(
                "response.output_item.added", output_index=index, item={**item, "content": []}
            )
        else:
            yield self._event(
                "response.output_item.added", output_index=index, item={**item, "summary": []}
            )
            yield self._event(
                "response.reasoning_summary_part.added",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part=_summary(""),
            )

    def _close_part(self, item: dict[str, Any]) -> Iterator[bytes]:
        """End the message's last content part: its .done event, then content_part.done."""
        self._flush()
        index, content_index = self.output.index(item), len(item["content"]) - 1
        part = item["content"][-1]
        at = {"item_id": item["id"], "output_index": index, "content_index": content_index}
        if part["type"] == "refusal":
            yield self._event("response.refusal.done", **at, refusal=part["refusal"])
        else:
            yield self._event("response.output_text.done", **at, text=part["text"], logprobs=[])
        yield self._event("response.content_part.done", **at, part=dict(part))

    def _close_open(self) -> Iterator[bytes]:
        self._flush()
        item, self.open = self.open, None
        if item is None:
            return
        index = self.output.index(item)
        if item["type"] == "message":
            if item["content"]:
                yield from self._close_part(item)
            item["status"] = "completed"
        else:
            text = item["summary"][0]["text"]
            yield self._event(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=text,
            )
            yield self._event(
                "response.reasoning_summary_part.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part=_summary(text),
            )
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _call(self, call: ToolCall) -> Iterator[bytes]:
        item = self.calls.get(call.index)
        if item is None:
            yield from self._close_open()
            item = self.calls[call.index] = _call_item(new_id("fc_"), call, "in_progress")
            item["arguments"] = ""
            self.output.append(item)
            yield self._event(
                "response.output_item.added", output_index=len(self.output) - 1, item=item
            )
        self._append(item, "arguments", call.arguments)
        yield self._event(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=self.output.index(item),
            delta=call.arguments,
        )

    def _snapshot(
        self, status: str, usage: Usage | None = None, error: GatewayError | None = None
    ) -> dict[str, Any]:
        self._flush()
        return render_response(
            self.rreq,
            self.rid,
            self.created,
            status=status,
            output=[dict(i) for i in self.output],
            usage=usage,
            error=error,
        )

    def _text_delta(self, item_id: str, index: int, content_index: int, text: str) -> bytes:
        """The event of most chunks, written from its parts with only the strings encoded: the
        bytes `_event()` gives, key for key."""
        seq, self.seq = self.seq, self.seq + 1
        return b"".join(
            (
                b"event: response.output_text.delta\n"
                b'data: {"type":"response.output_text.delta","sequence_number":',
                str(seq).encode(),
                b',"item_id":',
                encode_json(item_id),
                b',"output_index":',
                str(index).encode(),
                b',"content_index":',
                str(content_index).encode(),
                b',"delta":',
                encode_json(text),
                b',"logprobs":[]}\n\n',
            )
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: ".encode() + encode_json(payload) + b"\n\n"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def _message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [_summary(text)]}


def _call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }
