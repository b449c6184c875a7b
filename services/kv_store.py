"""Small key-value stores with a TTL, in process or in Redis, for state that workers share.

The Dify conversation memory and stored Responses live here. With REDIS_URL they are shared by
every worker and machine; when Redis is down they fall back to this worker's memory (and say so
once, through the RedisLink), so requests keep working with at worst a forgotten entry.
"""

from __future__ import annotations

import threading
from typing import Protocol

from cachetools import TTLCache

from services.redis_client import RedisError, RedisLink


class KeyValueStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> bool: ...


class MemoryStore:
    """One worker's store: a TTL cache behind a lock (cachetools is not thread-safe)."""

    def __init__(self, ttl: float, maxsize: int = 100_000) -> None:
        self._cache: TTLCache[str, str] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._cache[key] = value

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._cache.pop(key, None) is not None


class RedisStore:
    """Entries in Redis under a namespace, expiring after the TTL; memory while Redis is down."""

    def __init__(self, link: RedisLink, namespace: str, ttl: float) -> None:
        self.link, self.prefix, self.ttl = link, f"relay:{namespace}:", max(1, int(ttl))
        self.fallback = MemoryStore(ttl)

    def get(self, key: str) -> str | None:
        if self.link.usable():
            try:
                value = self.link.client.get(self.prefix + key)
                return value.decode() if isinstance(value, bytes) else None
            except RedisError as e:
                self.link.failed(e, f"reading {self.prefix}*")
        return self.fallback.get(key)

    def put(self, key: str, value: str) -> None:
        if self.link.usable():
            try:
                self.link.client.set(self.prefix + key, value, ex=self.ttl)
                return
            except RedisError as e:
                self.link.failed(e, f"writing {self.prefix}*")
        self.fallback.put(key, value)

    def delete(self, key: str) -> bool:
        if self.link.usable():
            try:
                return bool(self.link.client.delete(self.prefix + key))
            except RedisError as e:
                self.link.failed(e, f"deleting {self.prefix}*")
        return self.fallback.delete(key)


class StoreFactory:
    """Make a store per use: in Redis when REDIS_URL is set, else in this worker's memory."""

    def __init__(self, link: RedisLink | None) -> None:
        self.link = link

    def make(self, namespace: str, ttl: float) -> KeyValueStore:
        return RedisStore(self.link, namespace, ttl) if self.link else MemoryStore(ttl)
