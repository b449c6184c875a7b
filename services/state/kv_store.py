"""Small key-value stores with a TTL, in process or in Redis, for state that workers share.

The Dify conversation memory and stored Responses live here. With REDIS_URL they are shared by
every worker and machine; when Redis is down they fall back to this worker's memory (and say so
once, through the RedisLink), so requests keep working with at worst a forgotten entry.

Both kinds are bounded in bytes, not only in entries (docs/threat-model.md): in memory a
global budget per worker and a budget per owner (an API key), least recently used first out; in
Redis the budget per owner, oldest first out, while Redis's own `maxmemory` is the global bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from services.common.byte_lru import ENTRY_OVERHEAD as OVERHEAD
from services.common.byte_lru import ByteLRU
from services.state.redis_client import RedisError, RedisLink


@dataclass(frozen=True, slots=True)
class Budget:
    """How many bytes a store may hold in one worker, and how many of them one owner may."""

    max_bytes: int
    max_bytes_per_owner: int | None = None  # None: the whole budget


class KeyValueStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, owner: str = "") -> bool: ...

    def delete(self, key: str, owner: str = "") -> bool: ...


class MemoryStore:
    """One worker's store: values as UTF-8 bytes in a ByteLRU."""

    def __init__(self, ttl: float, budget: Budget) -> None:
        self._lru = ByteLRU(ttl, budget.max_bytes, budget.max_bytes_per_owner)

    def get(self, key: str) -> str | None:
        value = self._lru.get(key)
        return value.decode() if value is not None else None

    def put(self, key: str, value: str, owner: str = "") -> bool:
        return self._lru.put(key, value.encode(), owner)

    def delete(self, key: str, owner: str = "") -> bool:
        return self._lru.delete(key)


# Store an entry and charge it to its owner; evict the owner's oldest entries (and forget
# expired ones) until the owner's bytes fit the budget. KEYS: the entry, the owner's index
# (entry key -> time written) and the owner's sizes (entry key -> bytes, and their "total").
# ARGV: value, ttl ms, now ms, budget bytes, overhead bytes charged per entry.
# Returns 0 when the value alone exceeds the budget (and stores nothing).
_PUT_CHARGED = """
local ttl, now, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local size = #ARGV[1] + #KEYS[1] + tonumber(ARGV[5])
local function forget(k)
  local charged = redis.call('HGET', KEYS[3], k)
  if charged then redis.call('HINCRBY', KEYS[3], 'total', -tonumber(charged)) end
  redis.call('ZREM', KEYS[2], k)
  redis.call('HDEL', KEYS[3], k)
  redis.call('DEL', k)
end
forget(KEYS[1])
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do forget(k) end
if size > budget then return 0 end
while tonumber(redis.call('HGET', KEYS[3], 'total') or '0') + size > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  forget(oldest)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('HINCRBY', KEYS[3], 'total', size)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
"""

# Delete an entry and give its bytes back to its owner. KEYS as above. Returns 1 if it existed.
_DELETE_CHARGED = """
local charged = redis.call('HGET', KEYS[3], KEYS[1])
if charged then redis.call('HINCRBY', KEYS[3], 'total', -tonumber(charged)) end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('HDEL', KEYS[3], KEYS[1])
return redis.call('DEL', KEYS[1])
"""


class RedisStore:
    """Entries in Redis under a namespace, expiring after the TTL; memory while Redis is down.

    With a per-owner budget each owner's entries are indexed beside them, so one owner filling
    its budget evicts its own oldest entries and never another owner's.
    """

    def __init__(self, link: RedisLink, namespace: str, ttl: float, budget: Budget) -> None:
        self.link, self.prefix, self.ttl = link, f"relay:{namespace}:", max(1, int(ttl))
        self.per_owner = budget.max_bytes_per_owner
        self.fallback = MemoryStore(ttl, budget)
        self._put_charged = link.client.register_script(_PUT_CHARGED)
        self._delete_charged = link.client.register_script(_DELETE_CHARGED)

    def _index(self, owner: str) -> list[str]:
        return [f"{self.prefix}owner:{owner}:index", f"{self.prefix}owner:{owner}:sizes"]

    def get(self, key: str) -> str | None:
        if self.link.usable():
            try:
                value = self.link.client.get(self.prefix + key)
                return value.decode() if isinstance(value, bytes) else None
            except RedisError as e:
                self.link.failed(e, f"reading {self.prefix}*")
        return self.fallback.get(key)

    def put(self, key: str, value: str, owner: str = "") -> bool:
        if self.link.usable():
            try:
                if self.per_owner is None:
                    self.link.client.set(self.prefix + key, value, ex=self.ttl)
                    return True
                keys = [self.prefix + key, *self._index(owner)]
                now_ms = int(time.time() * 1000)
                args: list[str | int] = [value, self.ttl * 1000, now_ms, self.per_owner, OVERHEAD]
                return bool(self._put_charged(keys=keys, args=args))
            except RedisError as e:
                self.link.failed(e, f"writing {self.prefix}*")
        return self.fallback.put(key, value, owner)

    def delete(self, key: str, owner: str = "") -> bool:
        if self.link.usable():
            try:
                if self.per_owner is None:
                    return bool(self.link.client.delete(self.prefix + key))
                keys = [self.prefix + key, *self._index(owner)]
                return bool(self._delete_charged(keys=keys))
            except RedisError as e:
                self.link.failed(e, f"deleting {self.prefix}*")
        return self.fallback.delete(key)


class StoreFactory:
    """Make a store per use: in Redis when REDIS_URL is set, else in this worker's memory."""

    def __init__(self, link: RedisLink | None) -> None:
        self.link = link

    def make(self, namespace: str, ttl: float, budget: Budget) -> KeyValueStore:
        if self.link:
            return RedisStore(self.link, namespace, ttl, budget)
        return MemoryStore(ttl, budget)
