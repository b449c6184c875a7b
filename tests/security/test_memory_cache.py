"""The reply cache is bounded in bytes, and one reply over the per-entry cap is never cached
(finding 7): it can neither grow the cache nor evict everyone else's entries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.conftest import API_KEY, Gateway
from tests.fakes.ollama import FakeOllama
from tests.test_cache_http import chats, post

SMALL = 80_000  # characters: two such replies fit the 200 KB cache, three do not
HUGE = 150_000  # over the 100 KB per-entry cap, though under the whole cache's budget


def cache_env(fake: FakeOllama, **extra: str) -> dict[str, str]:
    return {
        "OLLAMA_BASE_URL": fake.url,
        "RELAY_API_KEYS": API_KEY,
        "RELAY_WORKERS": "1",
        "RELAY_CACHE_MAX_BYTES": "200000",
        "RELAY_CACHE_MAX_ENTRY_BYTES": "100000",
        **extra,
    }


@pytest.fixture(scope="module")
def small_cache(start_module_gateway: Callable[..., Gateway], fake_ollama: FakeOllama) -> Gateway:
    return start_module_gateway(cache_env(fake_ollama))


def ask(gw: Gateway, question: str) -> requests.Response:
    # temperature 0: only deterministic requests are cached by default
    body = {
        "model": "llama3.2",
        "temperature": 0,
        "messages": [{"role": "user", "content": question}],
    }
    resp = post(gw, body)
    assert resp.status_code == 200, resp.text
    return resp


def test_a_reply_over_the_entry_cap_is_not_cached_nor_evicts_others(small_cache, ollama):
    ollama.script("llama3.2", content=["s" * SMALL])
    assert ask(small_cache, "small").headers["X-Cache"] == "MISS"
    ollama.script("llama3.2", content=["h" * HUGE])
    assert ask(small_cache, "huge").headers["X-Cache"] == "MISS"
    again = ask(small_cache, "huge")
    assert again.headers["X-Cache"] == "MISS"
    assert again.json()["choices"][0]["message"]["content"] == "h" * HUGE
    assert chats(ollama) == 3
    assert ask(small_cache, "small").headers["X-Cache"] == "HIT"


def test_a_streamed_reply_over_the_entry_cap_is_not_cached(small_cache, ollama):
    ollama.script("llama3.2", content=["t" * 1000] * (HUGE // 1000))
    body = {
        "model": "llama3.2",
        "temperature": 0,
        "messages": [{"role": "user", "content": "streamed"}],
    }
    live = post(small_cache, {**body, "stream": True})
    assert live.headers["X-Cache"] == "MISS" and live.text.count("t" * 1000) == HUGE // 1000
    assert post(small_cache, body).headers["X-Cache"] == "MISS"
    assert chats(ollama) == 2


def test_the_cache_evicts_by_bytes_least_recently_used_first(start_gateway, fake_ollama, ollama):
    gw = start_gateway(cache_env(fake_ollama))
    ollama.script("llama3.2", content=["e" * SMALL])
    for question in ("one", "two", "three"):  # 240 KB of replies in a 200 KB cache
        assert ask(gw, question).headers["X-Cache"] == "MISS"
    assert ask(gw, "three").headers["X-Cache"] == "HIT"
    assert ask(gw, "two").headers["X-Cache"] == "HIT"
    assert ask(gw, "one").headers["X-Cache"] == "MISS"
    assert chats(ollama) == 4


def test_with_redis_the_entry_cap_holds_too(start_gateway, fake_ollama, ollama, redis_server):
    gw = start_gateway(cache_env(fake_ollama, REDIS_URL=redis_server.url))
    ollama.script("llama3.2", content=["h" * HUGE])
    assert ask(gw, "huge").headers["X-Cache"] == "MISS"
    assert ask(gw, "huge").headers["X-Cache"] == "MISS"
    ollama.script("llama3.2", content=["s" * SMALL])
    assert ask(gw, "small").headers["X-Cache"] == "MISS"
    assert ask(gw, "small").headers["X-Cache"] == "HIT"
