"""Pure conversion of a Chat Completions request to a Responses API call, and of the reply back.

Serves chat clients from an upstream that only offers the Responses API, following the tables
of docs/design.md §6 and the event list of §5.6.
No I/O: request dicts in, ChatResult/ChatDelta out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.errors import UpstreamError
from services.core.types import ChatDelta, ChatRequest, ChatResult, Message, ToolCall, Usage

# Chat-only fields that have no place in a Responses request; the rest of `extra` passes on.
_CHAT_ONLY = {"logprobs", "functions", "function_call", "modalities", "audio", "prediction"}


# --- request --------------------------------------------------------------------------------


def chat_to_responses(req: ChatRequest, stream: bool) -> dict[str, Any]:
    """Build the /responses body for a chat request."""
    instructions = [m.text() for m in req.messages if m.role in ("system", "developer")]
    body: dict[str, Any] = {
        "model": req.model,
        "input": [item for m in req.messages for item in _items(m)],
        "stream": stream,
        "store": False,  # a chat request is stateless; don't leave copies upstream
    }
    optional: dict[str, Any] = {
        "instructions": "\n\n".join(instructions) or None,
        "max_output_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": [_tool(t) for t in req.tools] or None,
        "tool_choice": _tool_choice(req.tool_choice),
        "text": _text_format(req.response_format),
        "reasoning": {"effort": req.reasoning_effort} if req.reasoning_effort else None,
        "user": req.user,
        # No official Responses fields; sent only when the caller set them (mapping table).
        "stop": list(req.stop) or None,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    extra = {k: v for k, v in req.extra.items() if k not in _CHAT_ONLY}
    if req.extra.get("logprobs") and "top_logprobs" in extra:
        extra["include"] = ["message.output_text.logprobs"]
    body.update(extra)
    return body


def _items(m: Message) -> list[dict[str, Any]]:
    if m.role in ("system", "developer"):
        return []  # carried by `instructions`
    if m.role in ("tool", "function"):
        return [
            {
                "type": "function_call_output",
                "call_id": m.tool_call_id or m.name,
                "output": m.text(),
            }
        ]
    if m.role == "assistant":
        items: list[dict[str, Any]] = []
        if m.text():
            # The typed form: a bare role/content pair breaks multi-turn on some servers.
            part = {"type": "output_text", "text": m.text(), "annotations": []}
            items.append({"type": "message", "role": "assistant", "content": [part]})
        items += [
            {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
            for c in m.tool_calls
        ]
        return items
    if isinstance(m.content, tuple):
        parts = [
            {"type": "input_text", "text": p.text}
            if p.type == "text"
            else {"type": "input_image", "image_url": p.url, "detail": "auto"}
            for p in m.content
        ]
    else:
        parts = [{"type": "input_text", "text": m.content or ""}]
    return [{"type": "message", "role": "user", "content": parts}]


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out = {"type": "function", "name": fn.get("name")}
    out.update({k: fn[k] for k in ("description", "parameters", "strict") if k in fn})
    return out


def _tool_choice(choice: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(choice, Mapping):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def _text_format(fmt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        flat = {"type": "json_schema", "name": spec.get("name") or "response"}
        flat.update({k: spec[k] for k in ("schema", "strict", "description") if k in spec})
        return {"format": flat}
    return {"format": {"type": str(fmt.get("type"))}}


# --- reply ----------------------------------------------------------------------------------


def read_usage(raw: Any, given: str = "input", made: str = "output") -> Usage:
    """Read a `usage` object into core Usage, details included when present.

    Responses names its counts input_/output_tokens; chat names them prompt_/completion_tokens
    (pass given="prompt", made="completion"). The detail objects follow the same names.
    """
    if not isinstance(raw, dict):
        return Usage()
    given_details = raw.get(f"{given}_tokens_details")
    made_details = raw.get(f"{made}_tokens_details")
    return Usage(
        prompt_tokens=as_int(raw.get(f"{given}_tokens")) or 0,
        completion_tokens=as_int(raw.get(f"{made}_tokens")) or 0,
        cached_tokens=as_int(as_dict(given_details).get("cached_tokens")),
        reasoning_tokens=as_int(as_dict(made_details).get("reasoning_tokens")),
    )


def finish_reason(response: Mapping[str, Any], has_tool_calls: bool) -> str:
    """Map a response's status to a chat finish_reason (incomplete → length)."""
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_tool_calls else "stop"


def responses_to_result(body: Any, title: str) -> ChatResult:
    """Turn a whole Responses object into a ChatResult."""
    if not isinstance(body, dict) or not isinstance(body.get("output"), list):
        raise UpstreamError(f"{title} sent a response without output.")
    _raise_if_failed(body, title)
    text: list[str] = []
    refusal: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for item in body["output"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(as_str(part.get("text")))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusal.append(as_str(part.get("refusal")))
        elif kind == "function_call":
            calls.append(_call(item, len(calls)))
        elif kind == "reasoning":
            reasoning.append(_reasoning_text(item))
    return ChatResult(
        content="".join(text),
        reasoning="\n\n".join(r for r in reasoning if r),
        tool_calls=tuple(calls),
        finish_reason=finish_reason(body, bool(calls)),
        usage=read_usage(body.get("usage")),
        refusal="".join(refusal),
    )


def _call(item: Mapping[str, Any], index: int) -> ToolCall:
    return ToolCall(
        id=as_str(item.get("call_id")) or as_str(item.get("id")),
        name=as_str(item.get("name")),
        arguments=as_str(item.get("arguments")),
        index=index,
    )


def _reasoning_text(item: Mapping[str, Any]) -> str:
    parts = [p for p in item.get("summary") or [] if isinstance(p, dict)]
    if not parts:  # raw reasoning (open-weight servers) rather than a summary
        parts = [p for p in item.get("content") or [] if isinstance(p, dict)]
    return "\n\n".join(as_str(p.get("text")) for p in parts)


def _raise_if_failed(response: Mapping[str, Any], title: str) -> None:
    if response.get("status") in ("failed", "cancelled"):
        error = response.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        raise UpstreamError(f"{title} failed: {message or response.get('status')}")


@dataclass(slots=True)
class ResponsesStreamReader:
    """Turn a Responses event stream into ChatDeltas, one event at a time (mapping table)."""

    title: str
    finished: bool = False
    # output_index of each function_call item -> (its chat tool-call index, arguments so far)
    calls: dict[int, list[Any]] = field(default_factory=dict)
    summary_parts: int = 0

    def feed(self, event: Any) -> list[ChatDelta]:
        if not isinstance(event, dict):
            raise UpstreamError(f"{self.title} sent a malformed event.")
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return [ChatDelta(content=as_str(event.get("delta")))]
        if kind == "response.refusal.delta":
            return [ChatDelta(refusal=as_str(event.get("delta")))]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ChatDelta(reasoning=as_str(event.get("delta")))]
        if kind == "response.reasoning_summary_part.added":
            self.summary_parts += 1  # parts after the first are set apart like paragraphs
            return [ChatDelta(reasoning="\n\n")] if self.summary_parts > 1 else []
        if kind == "response.output_item.added":
            return self._item_added(event)
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event.get("output_index"), as_str(event.get("delta")))
        if kind in ("response.function_call_arguments.done", "response.output_item.done"):
            return self._arguments_done(event)
        if kind in ("response.completed", "response.incomplete"):
            response = as_dict(event.get("response"))
            self.finished = True
            return [
                ChatDelta(
                    finish_reason=finish_reason(response, bool(self.calls)),
                    usage=read_usage(response.get("usage")),
                )
            ]
        if kind in ("response.failed", "error"):
            # error events come flat or nested (reference §3.3); response.failed nests it
            holder = as_dict(event.get("response")) or event
            nested = as_dict(holder.get("error"))
            message = event.get("message") or nested.get("message") or "unknown error"
            raise UpstreamError(f"{self.title} failed: {message}")
        return []  # created, in_progress, content_part.*, *.done texts, newer event types

    def _item_added(self, event: Mapping[str, Any]) -> list[ChatDelta]:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        index = len(self.calls)
        arguments = as_str(item.get("arguments"))
        self.calls[as_int(event.get("output_index")) or 0] = [index, arguments]
        call = _call(item, index)
        return [ChatDelta(tool_calls=(call,))]

    def _arguments(self, output_index: Any, piece: str) -> list[ChatDelta]:
        state = self.calls.get(as_int(output_index) or 0)
        if state is None or not piece:
            return []
        state[1] += piece
        return [ChatDelta(tool_calls=(ToolCall(id="", name="", arguments=piece, index=state[0]),))]

    def _arguments_done(self, event: Mapping[str, Any]) -> list[ChatDelta]:
        # Some servers send the arguments only whole, in *.done: send what deltas did not.
        item = as_dict(event.get("item")) or event
        state = self.calls.get(as_int(event.get("output_index")) or 0)
        whole = as_str(item.get("arguments"))
        if state is None or not whole.startswith(state[1]):
            return []
        return self._arguments(event.get("output_index"), whole[len(state[1]) :])


def as_str(value: Any) -> str:
    """Return the value if it is a string, else "" (lenient reading of upstream JSON)."""
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int | None:
    """Return the value if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_dict(value: Any) -> dict[str, Any]:
    """Return the value if it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}
