"""Stored Responses API replies, for previous_response_id and GET /v1/responses/<id>.

A record is `{"v": 2, "messages": [...], "response": {...}, "owner": "..."}`: the conversation
the response ended as core message records (`message_records.py`: the core types' own shape, no
protocol's JSON), and the Response object GET returns. Records written before version 2 hold
`"history"`, chat-format messages, instead; they may still be in Redis for a TTL after an
upgrade, so `get` hands their history to a reader the caller gives (responses.py's upgrade
path) and the next turn is stored as version 2. A record that is not exactly one of these
shapes is treated as missing: the same 404 as an expired id.

Each record keeps who stored it (the key's name): only that key may read, continue or delete it.
Each record holds its whole conversation (every earlier turn too), so continuing never depends
on an older record still being there. What bounds memory: continuing a conversation whose
history is over a cap in bytes is refused (responses.py), and the store's byte budgets hold at
most so many bytes per key and per worker, a record larger than its key's budget not at all
(docs/threat-model.md). Both are measured on what is stored: the records' compact UTF-8 JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from services.common.unicode_text import escape_surrogates
from services.core.types import Message
from services.state.kv_store import KeyValueStore
from services.state.message_records import (
    VERSION,
    MalformedRecord,
    dump_messages,
    load_messages,
)

# Reads the chat-format history of a record written before version 2; raises MalformedRecord
# when it is not valid chat-format messages.
LegacyHistoryReader = Callable[[list[Any]], tuple[Message, ...]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    messages: tuple[Message, ...]  # the whole conversation, up to and including its reply
    response: dict[str, Any]  # the Response object, as GET /v1/responses/<id> returns it


def serialized_size(value: Any) -> int:
    """Bytes of `value` as stored: compact UTF-8 JSON."""
    return len(_dumps(value).encode())


def _dumps(value: Any) -> str:
    # Compact UTF-8 JSON; a lone surrogate (from an upstream) escaped, as UTF-8 cannot hold it.
    return escape_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class ResponseStore:
    def __init__(self, store: KeyValueStore, max_conversation_bytes: int) -> None:
        self.store = store
        self.max_conversation_bytes = max_conversation_bytes

    def get(
        self, response_id: str, owner: str, legacy: LegacyHistoryReader
    ) -> StoredResponse | None:
        """Return the record if it exists, is well formed and belongs to `owner`."""
        raw = self.store.get(response_id)
        if not raw:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            logger.warning("stored response {} unreadable: not a JSON object", response_id)
            return None
        if record.get("owner") != owner:
            return None
        try:
            return _decode(record, legacy)
        except MalformedRecord as e:  # its reason names a field, never stored content
            logger.warning("stored response {} unreadable: {}", response_id, e)
            return None

    def may_continue(self, messages: Sequence[Message]) -> bool:
        """Tell whether a conversation of these messages is short enough to grow and store."""
        return serialized_size(dump_messages(messages)) <= self.max_conversation_bytes

    def put(
        self, response_id: str, owner: str, messages: Sequence[Message], response: dict[str, Any]
    ) -> bool:
        """Store a record; False when it is larger than the owner's whole budget."""
        record = {"v": VERSION, "messages": dump_messages(messages), "response": response}
        return self.store.put(response_id, _dumps({**record, "owner": owner}), owner)

    def delete(self, response_id: str, owner: str, legacy: LegacyHistoryReader) -> bool:
        """Delete a record `get` would return; False when there is none."""
        found = self.get(response_id, owner, legacy) is not None
        return found and self.store.delete(response_id, owner)


def _decode(record: dict[str, Any], legacy: LegacyHistoryReader) -> StoredResponse:
    response = record.get("response")
    if not isinstance(response, dict):
        raise MalformedRecord("response: not an object")
    version = record.get("v")
    if version == VERSION and isinstance(version, int):
        return StoredResponse(load_messages(record.get("messages")), response)
    if "v" not in record and isinstance(record.get("history"), list):
        # Upgrade path: a record written before version 2 (chat-format history).
        return StoredResponse(legacy(record["history"]), response)
    raise MalformedRecord("not a known record version")
