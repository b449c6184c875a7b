"""Stored Responses API replies, for previous_response_id and GET /v1/responses/<id>."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from cachetools import TTLCache


class ResponseStore(Protocol):
    """Where stored responses live; Redis can implement it for many workers."""

    def get(self, response_id: str) -> dict[str, Any] | None: ...

    def put(self, response_id: str, record: dict[str, Any]) -> None: ...

    def delete(self, response_id: str) -> bool: ...


class MemoryResponseStore:
    """In-process store with a TTL; each gunicorn worker has its own."""

    def __init__(self, ttl: float, maxsize: int = 10_000) -> None:
        self._cache: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, response_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._cache.get(response_id)

    def put(self, response_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._cache[response_id] = record

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._cache.pop(response_id, None) is not None
