"""The byte-bounded store and the Dify conversation-id cap, tested directly (finding 7)."""

from __future__ import annotations

from services.backends.dify.conversations import MAX_CONVERSATION_ID_CHARS, rememberable
from services.common.byte_lru import ENTRY_OVERHEAD, ByteLRU


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_many_tiny_entries_are_bounded_too():
    lru = ByteLRU(ttl=60, max_bytes=100 * ENTRY_OVERHEAD)
    for i in range(10_000):
        lru.put(f"k{i}", b"")
    assert lru.total_bytes <= 100 * ENTRY_OVERHEAD
    assert lru.get("k0") is None and lru.get("k9999") == b""


def test_reading_an_entry_saves_it_from_eviction():
    lru = ByteLRU(ttl=60, max_bytes=3 * (1000 + ENTRY_OVERHEAD + 2))
    for key in ("k1", "k2", "k3"):
        assert lru.put(key, b"x" * 1000)
    assert lru.get("k1") is not None
    lru.put("k4", b"x" * 1000)
    assert lru.get("k2") is None and lru.get("k1") is not None


def test_an_entry_over_the_owner_budget_is_refused_without_evicting():
    lru = ByteLRU(ttl=60, max_bytes=1_000_000, max_bytes_per_owner=10_000)
    assert lru.put("small", b"x" * 100, owner="a")
    assert not lru.put("huge", b"x" * 10_000, owner="a")
    assert lru.get("small") is not None and lru.get("huge") is None


def test_rewriting_or_deleting_gives_the_bytes_back():
    lru = ByteLRU(ttl=60, max_bytes=1_000_000, max_bytes_per_owner=10_000)
    lru.put("k", b"x" * 5_000, owner="a")
    lru.put("k", b"x" * 10, owner="a")
    assert lru.total_bytes == 1 + 10 + ENTRY_OVERHEAD
    assert lru.delete("k") and lru.total_bytes == 0 and not lru.delete("k")


def test_expired_entries_read_as_missing_and_are_dropped():
    clock = Clock()
    lru = ByteLRU(ttl=10, max_bytes=1_000_000, clock=clock)
    lru.put("old", b"x" * 1000)
    clock.now = 11
    lru.put("new", b"y")
    assert lru.get("old") is None and lru.total_bytes == 3 + 1 + ENTRY_OVERHEAD


def test_only_sane_dify_conversation_ids_are_remembered():
    assert rememberable("8c1a3f0e-6a0b-4a5e-9d3c-1f2e3d4c5b6a")
    assert not rememberable("")
    assert not rememberable("c" * (MAX_CONVERSATION_ID_CHARS + 1))
    assert not rememberable("c" * 5_000_000)
