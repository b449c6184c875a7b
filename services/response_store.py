"""Stored Responses API replies, for previous_response_id and GET /v1/responses/<id>.

Each record keeps who stored it (the key's name): only that key may read, continue or delete it.
"""

from __future__ import annotations

import json
from typing import Any

from services.kv_store import KeyValueStore


class ResponseStore:
    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    def get(self, response_id: str, owner: str) -> dict[str, Any] | None:
        """Return the record if it exists and belongs to `owner`."""
        raw = self.store.get(response_id)
        record = json.loads(raw) if raw else None
        return record if record and record.get("owner") == owner else None

    def put(self, response_id: str, owner: str, record: dict[str, Any]) -> None:
        self.store.put(response_id, json.dumps({**record, "owner": owner}, ensure_ascii=False))

    def delete(self, response_id: str, owner: str) -> bool:
        return self.get(response_id, owner) is not None and self.store.delete(response_id)
