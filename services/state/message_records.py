"""Core messages as plain JSON records, for state that keeps a conversation (docs/design.md §1).

The shape is the core dataclasses' own (`services/core/types.py`: Message, ContentPart,
ToolCall), not any protocol's wire format, so what a face or a backend renders can change without
touching what is stored. Fields at their default are left out, which keeps stored bytes down:

    {"role": "assistant", "content": null,
     "tool_calls": [{"id": "call_1", "name": "f", "arguments": "{}", "index": 0}]}
    {"role": "user", "content": [{"type": "text", "text": "Look"},
                                 {"type": "image", "url": "data:image/png;base64,..."}]}

VERSION names this shape; a container that stores the records says which version it holds
(version 1 was the chat-format history stored Responses kept before). Loading is strict: any
record that is not exactly this shape raises MalformedRecord, and the caller treats the whole
container as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.core.types import ContentPart, Message, ToolCall

VERSION = 2


class MalformedRecord(ValueError):
    """A stored record is not a message record of this version."""


def dump_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Core messages as JSON-ready records."""
    return [_dump_message(m) for m in messages]


def load_messages(records: Any) -> tuple[Message, ...]:
    """Core messages from records dump_messages wrote; MalformedRecord for anything else."""
    if not isinstance(records, list):
        raise MalformedRecord("messages: not a list")
    return tuple(_load_message(r, f"messages[{i}]") for i, r in enumerate(records))


def _dump_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, tuple):
        out["content"] = [_dump_part(p) for p in m.content]
    else:
        out["content"] = m.content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments, "index": c.index}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.reasoning is not None:
        out["reasoning"] = m.reasoning
    return out


def _dump_part(p: ContentPart) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p.type}
    if p.text:
        out["text"] = p.text
    if p.url:
        out["url"] = p.url
    return out


_MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "reasoning"}
_PART_KEYS = {"type", "text", "url"}
_CALL_KEYS = {"id", "name", "arguments", "index"}


def _load_message(raw: Any, where: str) -> Message:
    record = _object(raw, where, _MESSAGE_KEYS, required={"role", "content"})
    content = record["content"]
    parsed: str | tuple[ContentPart, ...] | None
    if content is None or isinstance(content, str):
        parsed = content
    elif isinstance(content, list):
        parsed = tuple(_load_part(p, f"{where}.content[{j}]") for j, p in enumerate(content))
    else:
        raise MalformedRecord(f"{where}.content: not a string, list or null")
    calls = record.get("tool_calls", [])
    if not isinstance(calls, list) or ("tool_calls" in record and not calls):
        raise MalformedRecord(f"{where}.tool_calls: not a non-empty list")
    return Message(
        role=_str(record, "role", where),
        content=parsed,
        name=_opt_str(record, "name", where),
        tool_calls=tuple(_load_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)),
        tool_call_id=_opt_str(record, "tool_call_id", where),
        reasoning=_opt_str(record, "reasoning", where),
    )


def _load_part(raw: Any, where: str) -> ContentPart:
    record = _object(raw, where, _PART_KEYS, required={"type"})
    kind = record["type"]
    if kind not in ("text", "image"):
        raise MalformedRecord(f"{where}.type: not text or image")
    return ContentPart(
        type=kind,
        text=_opt_str(record, "text", where) or "",
        url=_opt_str(record, "url", where) or "",
    )


def _load_call(raw: Any, where: str) -> ToolCall:
    record = _object(raw, where, _CALL_KEYS, required=_CALL_KEYS)
    index = record["index"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise MalformedRecord(f"{where}.index: not a non-negative integer")
    return ToolCall(
        id=_str(record, "id", where),
        name=_str(record, "name", where),
        arguments=_str(record, "arguments", where),
        index=index,
    )


def _object(raw: Any, where: str, keys: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise MalformedRecord(f"{where}: not an object")
    if not required <= raw.keys() or not raw.keys() <= keys:
        raise MalformedRecord(f"{where}: missing or unknown fields")
    return raw


def _str(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise MalformedRecord(f"{where}.{key}: not a string")
    return value


def _opt_str(record: Mapping[str, Any], key: str, where: str) -> str | None:
    return _str(record, key, where) if key in record else None
