"""The reply cache: canonical request keys per tenant, a store in memory or in Redis, and in-flight
sharing so identical requests running at once make one upstream call.

Endpoint-neutral: a caller gives the key's payload, a `compute()` and a codec; chat, completions
and embeddings plug in the same way. Redis failures skip the cache; they never fail a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from cachetools import TTLCache
from loguru import logger

from services.state.redis_client import RedisError, RedisLink

T = TypeVar("T")
HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"
POLL = 0.02  # seconds between looks at Redis while an identical request is in flight
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
ENTRY_OVERHEAD = 256  # bytes charged per in-memory entry beyond its value: key and bookkeeping


def _entry_cost(value: bytes) -> int:
    return len(value) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one request lets the cache do: whose entries it sees, and read or store or both."""

    tenant: str
    read: bool = True
    store: bool = True


def parse_cache_control(header: str, pragma: str, tenant: str) -> CachePolicy:
    """Read the request's Cache-Control: no-cache skips reading, no-store skips storing."""
    directives = {d.strip().split("=")[0].lower() for d in header.split(",")}
    no_cache = "no-cache" in directives or "no-cache" in pragma.lower()
    return CachePolicy(tenant=tenant, read=not no_cache, store="no-store" not in directives)


def cache_key(endpoint: str, tenant: str, backend: str, payload: Mapping[str, Any]) -> str:
    """Hash a canonical form of a routed request: JSON key order and spacing do not matter."""
    canonical = json.dumps(
        {"endpoint": endpoint, "tenant": tenant, "backend": backend, "request": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_plain,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """What JSON cannot write itself: a dataclass as the dict of its fields (one level: the
    encoder comes back here for the ones inside), a read-only mapping as a dict, else text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How a result is stored, and whether it may be (errors never reach here)."""

    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]
    storable: Callable[[T], bool]


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def claim(self, key: str) -> bool: ...
    def wait(self, key: str, timeout: float) -> None: ...
    def release(self, key: str) -> None: ...


class MemoryStore:
    """One worker's TTLCache, bounded in entries and in bytes (each entry charged its length).

    cachetools is not thread-safe, so every access takes the lock.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        lock: threading.Lock,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._cache: TTLCache[str, bytes] = TTLCache(
            maxsize=max_bytes, ttl=ttl, getsizeof=_entry_cost
        )
        self._max_entries = max_entries
        self._lock = lock
        self._running: dict[str, threading.Event] = {}

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            if _entry_cost(value) > self._cache.maxsize:
                return  # cachetools would raise; the caller's cap normally stops it first
            self._cache.pop(key, None)
            while len(self._cache) >= self._max_entries:
                self._cache.popitem()  # the least recently used
            self._cache[key] = value

    def claim(self, key: str) -> bool:
        with self._lock:
            if key in self._running:
                return False
            self._running[key] = threading.Event()
            return True

    def wait(self, key: str, timeout: float) -> None:
        with self._lock:
            event = self._running.get(key)
        if event is not None:
            event.wait(timeout)

    def release(self, key: str) -> None:
        with self._lock:
            event = self._running.pop(key, None)
        if event is not None:
            event.set()


class RedisStore:
    """Entries and in-flight markers in Redis, shared by every worker and machine."""

    def __init__(self, link: RedisLink, ttl: float, lease: float) -> None:
        self._redis = link.client
        self._ttl_ms = max(1, int(ttl * 1000))
        self._lease_ms = max(1, int(lease * 1000))  # a crashed leader frees its twins after this

    def get(self, key: str) -> bytes | None:
        value = self._redis.get("relay:cache:" + key)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        self._redis.set("relay:cache:" + key, value, px=self._ttl_ms)

    def claim(self, key: str) -> bool:
        return bool(self._redis.set("relay:inflight:" + key, b"1", nx=True, px=self._lease_ms))

    def wait(self, key: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._redis.exists("relay:inflight:" + key) and time.monotonic() < deadline:
            time.sleep(POLL)

    def release(self, key: str) -> None:
        self._redis.delete("relay:inflight:" + key)


class ReplyCache:
    def __init__(
        self,
        store: Store | None,
        link: RedisLink | None,
        wait: float,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        self.store = store  # None: the cache is off
        self.max_entry_bytes = max_entry_bytes  # one huge reply must not evict everything else
        self._link = link
        self._wait = wait  # longest a request waits for an identical one in flight

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def _usable(self) -> bool:
        return self.store is not None and (self._link is None or self._link.usable())

    def _failed(self, error: RedisError) -> None:
        if self._link is not None:
            self._link.failed(error, "reply cache")

    def get(self, key: str) -> bytes | None:
        """Return a stored entry, or None (also when the store is unreachable)."""
        if not self._usable():
            return None
        assert self.store is not None
        try:
            return self.store.get(key)
        except RedisError as e:
            self._failed(e)
            return None

    def put(self, key: str, value: bytes) -> None:
        """Store an entry; a store that is down, or an entry over the size cap, is skipped."""
        if not self._usable() or len(value) > self.max_entry_bytes:
            return
        assert self.store is not None
        try:
            self.store.put(key, value)
        except RedisError as e:
            self._failed(e)

    def run(
        self,
        make_key: Callable[[], str],
        policy: CachePolicy,
        compute: Callable[[], T],
        codec: Codec[T],
    ) -> tuple[T, str]:
        """Answer from the cache, from an identical request in flight, or by computing.

        The key is made only when the cache will be used: it costs a canonical dump of the
        request, which a gateway without a cache should not pay on every call.
        """
        if not self._usable() or not policy.read:
            result = compute()
            if policy.store and self._usable() and codec.storable(result):
                self.put(make_key(), codec.encode(result))
            return result, BYPASS
        key = make_key()
        assert self.store is not None
        deadline = time.monotonic() + self._wait
        waited = leader = False
        try:
            while True:
                hit = self.store.get(key)
                if hit is not None:
                    return codec.decode(hit), HIT
                leader = self.store.claim(key)
                if leader or time.monotonic() >= deadline:
                    break
                if not waited:
                    logger.debug("reply cache: waiting for an identical request in flight")
                    waited = True
                self.store.wait(key, max(0.0, deadline - time.monotonic()))
        except RedisError as e:
            self._failed(e)
            return compute(), BYPASS
        try:
            result = compute()
            if policy.store and codec.storable(result):
                self.put(key, codec.encode(result))
            return result, MISS
        finally:
            if leader:
                self._release(key)

    def _release(self, key: str) -> None:
        assert self.store is not None
        try:
            self.store.release(key)
        except RedisError as e:
            self._failed(e)


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """How long entries live and how much the cache may hold."""

    ttl: float
    max_entries: int  # per worker, in memory
    max_bytes: int  # per worker, in memory; with Redis, Redis's maxmemory bounds the cache
    max_entry_bytes: int  # one reply, in memory or Redis


def build_cache(limits: CacheLimits, link: RedisLink | None, wait: float) -> ReplyCache:
    """Build the reply cache: off when ttl is 0, in Redis when linked, else in this worker."""
    cap = min(limits.max_entry_bytes, limits.max_bytes)
    if limits.ttl <= 0:
        return ReplyCache(None, link, wait, cap)
    if link is not None:
        return ReplyCache(RedisStore(link, limits.ttl, lease=wait), link, wait, cap)
    store = MemoryStore(limits.ttl, limits.max_entries, threading.Lock(), limits.max_bytes)
    return ReplyCache(store, None, wait, cap)
