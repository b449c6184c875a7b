"""An in-process store bounded in bytes: a global budget, a budget per owner, and a TTL.

Counting entries is no bound when one entry may be megabytes, so every entry is charged the
bytes it holds (plus a fixed overhead, so a flood of tiny entries is bounded too). When a budget
would be exceeded, the least recently used entries go first: the owner's own when the owner's
budget is full, anyone's when the global one is. An entry larger than the budget it would count
against is not stored at all. Values are kept as UTF-8 bytes, so the bytes charged are the bytes
held (a Python str may take up to four times its UTF-8 size).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ENTRY_OVERHEAD = 256  # bytes charged per entry for its key, bookkeeping and dict slots


@dataclass(frozen=True, slots=True)
class _Entry:
    owner: str
    value: bytes
    cost: int
    expires: float


class ByteLRU:
    """Thread-safe LRU of bytes values with byte budgets; expired entries read as missing."""

    def __init__(
        self,
        ttl: float,
        max_bytes: int,
        max_bytes_per_owner: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.max_bytes, self._clock = ttl, max_bytes, clock
        self.max_bytes_per_owner = max_bytes_per_owner or max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._owners: dict[str, OrderedDict[str, None]] = {}  # the same order, per owner
        self._owner_bytes: dict[str, int] = {}
        self.total_bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            self._owners[entry.owner].move_to_end(key)
            return entry.value

    def put(self, key: str, value: bytes, owner: str = "") -> bool:
        """Store `value`; return False when it is too large for any budget to hold."""
        cost = len(key) + len(value) + ENTRY_OVERHEAD
        with self._lock:
            if key in self._entries:
                self._remove(key)
            if cost > self.max_bytes_per_owner or cost > self.max_bytes:
                return False
            self._drop_expired()
            mine = self._owners.get(owner)
            while mine and self._owner_bytes[owner] + cost > self.max_bytes_per_owner:
                self._remove(next(iter(mine)))
            while self._entries and self.total_bytes + cost > self.max_bytes:
                self._remove(next(iter(self._entries)))
            self._entries[key] = _Entry(owner, value, cost, self._clock() + self.ttl)
            self._owners.setdefault(owner, OrderedDict())[key] = None
            self._owner_bytes[owner] = self._owner_bytes.get(owner, 0) + cost
            self.total_bytes += cost
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._remove(key)

    def _drop_expired(self) -> None:
        # Entries expire a fixed time after they were written, so the least recently used ones
        # are the likeliest to have expired; anything older still counts until evicted.
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            self._remove(key)

    def _remove(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        mine = self._owners[entry.owner]
        del mine[key]
        self._owner_bytes[entry.owner] -= entry.cost
        if not mine:  # forget owners with nothing stored, so owners cannot pile up either
            del self._owners[entry.owner], self._owner_bytes[entry.owner]
        self.total_bytes -= entry.cost
        return True
