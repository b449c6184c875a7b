"""Stored Responses API replies, for previous_response_id and GET /v1/responses/<id>.

Each record keeps who stored it (the key's name): only that key may read, continue or delete it.
Each record holds its whole conversation (every earlier turn too), so continuing never depends
on an older record still being there. What bounds memory: continuing a conversation whose
history is over a cap in bytes is refused (responses.py), and the store's byte budgets hold at
most so many bytes per key and per worker, a record larger than its key's budget not at all
(docs/threat-model.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.common.unicode_text import escape_surrogates
from services.state.kv_store import KeyValueStore


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

    def get(self, response_id: str, owner: str) -> dict[str, Any] | None:
        """Return the record if it exists and belongs to `owner`."""
        raw = self.store.get(response_id)
        record = json.loads(raw) if raw else None
        return record if record and record.get("owner") == owner else None

    def may_continue(self, messages: Sequence[Any]) -> bool:
        """Tell whether a conversation of these messages is short enough to grow and store."""
        return serialized_size(list(messages)) <= self.max_conversation_bytes

    def put(self, response_id: str, owner: str, record: dict[str, Any]) -> bool:
        """Store a record; False when it is larger than the owner's whole budget."""
        raw = _dumps({**record, "owner": owner})
        return self.store.put(response_id, raw, owner)

    def delete(self, response_id: str, owner: str) -> bool:
        return self.get(response_id, owner) is not None and self.store.delete(response_id, owner)
