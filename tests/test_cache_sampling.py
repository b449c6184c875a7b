"""The reply cache respects sampling (RELAY_CACHE_MODE, docs/access.md "Which replies are cached").

By default only deterministic chat and completions requests — `temperature` 0 or a `seed` — are
read from and stored in the cache, so a chat UI's "regenerate" reaches the backend again; a
request that samples says `X-Cache: BYPASS`. Embeddings are always cached. `all` caches every
reply, `off` none. The rule is the same on every face: OpenAI chat and completions, Anthropic's
`/v1/messages`, Ollama's `/api/chat`, `/api/generate` and `/api/embed`. Real gunicorn, a fake
Ollama that counts the calls it gets, the official SDKs where they show response headers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest
import requests

from tests.conftest import API_KEY, Gateway, wait_until
from tests.fakes.ollama import FakeOllama
from tests.test_startup_config import run_gunicorn

AUTH = {"Authorization": f"Bearer {API_KEY}"}
_prompts = itertools.count()


def fresh(text: str = "Tell me a joke") -> list[dict[str, str]]:
    """A user turn no earlier test asked: the module's gateways keep their caches across tests."""
    return [{"role": "user", "content": f"{text} #{next(_prompts)}"}]


def post(gw: Gateway, path: str, body: dict[str, Any], **headers: str) -> requests.Response:
    resp = requests.post(gw.url + path, json=body, headers={**AUTH, **headers}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp


def calls(fake: FakeOllama, path: str = "/api/chat") -> int:
    return len([r for r in fake.requests if r.path == path])


def twice(gw: Gateway, path: str, body: dict[str, Any]) -> list[str]:
    """Send the same request twice; the two X-Cache headers."""
    return [post(gw, path, body).headers["X-Cache"] for _ in range(2)]


def env(fake: FakeOllama, **extra: str) -> dict[str, str]:
    return {"OLLAMA_BASE_URL": fake.url, "RELAY_API_KEYS": API_KEY, "LOG_LEVEL": "debug", **extra}


@pytest.fixture(scope="module")
def default(start_module_gateway: Callable[..., Gateway], fake_ollama: FakeOllama) -> Gateway:
    """RELAY_CACHE_MODE unset: `deterministic`."""
    return start_module_gateway(env(fake_ollama))


@pytest.fixture(scope="module")
def cache_all(start_module_gateway: Callable[..., Gateway], fake_ollama: FakeOllama) -> Gateway:
    return start_module_gateway(env(fake_ollama, RELAY_CACHE_MODE="all"))


@pytest.fixture(scope="module")
def cache_off(
    start_module_gateway: Callable[..., Gateway], fake_ollama: FakeOllama, tmp_path_factory
) -> Gateway:
    """`off`, set in the config file's [cache] table this time."""
    config = tmp_path_factory.mktemp("cache-off") / "relay.toml"
    config.write_text('[cache]\nmode = "off"\n')
    return start_module_gateway(env(fake_ollama, RELAY_CONFIG=str(config)))


# --- the default: deterministic ---------------------------------------------------------------


def test_regenerate_with_temperature_gets_a_new_answer(default, ollama: FakeOllama):
    body = {"model": "llama3.2", "temperature": 0.8, "messages": fresh()}
    ollama.script("llama3.2", content=["First", " joke"])
    first = post(default, "/v1/chat/completions", body)
    ollama.script("llama3.2", content=["Second", " joke"])
    again = post(default, "/v1/chat/completions", body)
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("BYPASS", "BYPASS")
    assert first.json()["choices"][0]["message"]["content"] == "First joke"
    assert again.json()["choices"][0]["message"]["content"] == "Second joke"
    assert calls(ollama) == 2
    # Streamed too, and what was streamed is not stored for a later request either.
    sdk = openai.OpenAI(base_url=default.url + "/v1", api_key=API_KEY, max_retries=0)
    for _ in range(2):
        with sdk.chat.completions.with_streaming_response.create(
            model="llama3.2", messages=body["messages"], temperature=0.8, stream=True
        ) as raw:
            assert raw.headers["X-Cache"] == "BYPASS"
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == "Second joke"
    assert calls(ollama) == 4
    assert post(default, "/v1/chat/completions", body).headers["X-Cache"] == "BYPASS"
    assert calls(ollama) == 5
    assert "cache=BYPASS" in default.logs()


def test_temperature_zero_is_answered_from_the_cache(default, ollama):
    body = {"model": "llama3.2", "temperature": 0, "messages": fresh()}
    assert twice(default, "/v1/chat/completions", body) == ["MISS", "HIT"]
    assert calls(ollama) == 1
    streamed = post(default, "/v1/chat/completions", {**body, "stream": True})
    assert streamed.headers["X-Cache"] == "HIT" and streamed.text.endswith("data: [DONE]\n\n")
    assert calls(ollama) == 1


def test_a_seed_is_cached_whatever_the_temperature(default, ollama):
    body = {"model": "llama3.2", "temperature": 0.8, "seed": 42, "messages": fresh()}
    assert twice(default, "/v1/chat/completions", body) == ["MISS", "HIT"]
    assert calls(ollama) == 1
    assert twice(default, "/v1/chat/completions", {**body, "seed": 0}) == ["MISS", "HIT"]
    assert calls(ollama) == 2
    # -1 is Ollama's and llama.cpp's "a random seed": no seed at all.
    assert twice(default, "/v1/chat/completions", {**body, "seed": -1}) == ["BYPASS", "BYPASS"]
    assert calls(ollama) == 4


def test_no_temperature_means_the_backends_default_which_samples(default, ollama):
    body = {"model": "llama3.2", "messages": fresh()}
    assert twice(default, "/v1/chat/completions", body) == ["BYPASS", "BYPASS"]
    # top_p and top_k do not make a request deterministic; only temperature 0 or a seed do.
    narrow = {**body, "top_p": 0.01, "top_k": 1}
    assert twice(default, "/v1/chat/completions", narrow) == ["BYPASS", "BYPASS"]
    assert twice(default, "/v1/chat/completions", {**body, "temperature": 0.0001}) == [
        "BYPASS",
        "BYPASS",
    ]
    assert calls(ollama) == 6


def test_identical_sampling_requests_in_flight_are_not_shared(default, ollama):
    gate = threading.Event()
    ollama.script("llama3.2", content=["Own"], gate=gate)
    body = {"model": "llama3.2", "temperature": 0.8, "messages": fresh()}
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, default, "/v1/chat/completions", body) for _ in range(3)]
        try:
            wait_until(lambda: calls(ollama) == 3, timeout=10)  # none waits for another
        finally:
            gate.set()
        replies = [f.result() for f in futures]
    assert [r.headers["X-Cache"] for r in replies] == ["BYPASS"] * 3
    assert calls(ollama) == 3


def test_legacy_completions_follow_the_rule(default, ollama):
    prompt = fresh("Once upon a time")[0]["content"]
    sampled = {"model": "llama3.2", "prompt": [prompt, "x"], "max_tokens": 5, "temperature": 0.8}
    assert twice(default, "/v1/completions", sampled) == ["BYPASS", "BYPASS"]
    assert calls(ollama, "/api/generate") == 4  # two prompts, twice
    assert twice(default, "/v1/completions", {**sampled, "temperature": 0}) == ["MISS", "HIT"]
    assert twice(default, "/v1/completions", {**sampled, "seed": 9}) == ["MISS", "HIT"]
    assert calls(ollama, "/api/generate") == 8


def test_embeddings_are_always_cached(default, ollama):
    ollama.script("nomic-embed-text")
    text = fresh("embed me")[0]["content"]
    body = {"model": "nomic-embed-text", "input": [text], "encoding_format": "float"}
    first, second = (post(default, "/v1/embeddings", body) for _ in range(2))
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.json()["data"] == second.json()["data"]
    native = {"model": "nomic-embed-text", "input": fresh("embed me too")[0]["content"]}
    assert twice(default, "/api/embed", native) == ["MISS", "HIT"]
    assert calls(ollama, "/api/embed") == 2


def test_anthropic_messages_follow_the_rule(default, ollama):
    with anthropic.Anthropic(base_url=default.url, api_key=API_KEY, max_retries=0) as claude:
        # The SDK took `temperature` out of create()'s keywords; it is still on the wire
        # (Claude Code sends 1), so it goes in extra_body (docs/anthropic.md).
        def ask(**sampling: Any) -> str:
            raw = claude.messages.with_raw_response.create(
                model="llama3.2", max_tokens=50, messages=messages, extra_body=sampling
            )
            assert raw.parse().content[0].text == "Hello from fake Ollama."
            return raw.headers["X-Cache"]

        messages = fresh()
        assert [ask(temperature=0.8) for _ in range(2)] == ["BYPASS", "BYPASS"]
        assert calls(ollama) == 2
        assert [ask() for _ in range(2)] == ["BYPASS", "BYPASS"]  # the backend's default
        assert calls(ollama) == 4
        assert [ask(temperature=0) for _ in range(2)] == ["MISS", "HIT"]
        assert calls(ollama) == 5
        with claude.messages.with_streaming_response.create(
            model="llama3.2",
            max_tokens=50,
            messages=messages,
            extra_body={"temperature": 0.8},
            stream=True,
        ) as raw:
            assert raw.headers["X-Cache"] == "BYPASS"
            assert any(e.type == "message_stop" for e in raw.parse())
        assert calls(ollama) == 6


def test_ollama_native_options_follow_the_rule(default, ollama):
    def body(**options: Any) -> dict[str, Any]:
        return {"model": "llama3.2", "messages": messages, "stream": False, "options": options}

    messages = fresh()
    assert twice(default, "/api/chat", body(temperature=0.8)) == ["BYPASS", "BYPASS"]
    assert twice(default, "/api/chat", body()) == ["BYPASS", "BYPASS"]
    assert calls(ollama) == 4
    assert twice(default, "/api/chat", body(temperature=0)) == ["MISS", "HIT"]
    assert twice(default, "/api/chat", body(temperature=0.8, seed=7)) == ["MISS", "HIT"]
    assert calls(ollama) == 6
    assert calls(ollama, "/api/generate") == 0

    prompt = fresh("Why is the sky blue?")[0]["content"]
    generate = {"model": "llama3.2", "prompt": prompt, "stream": False}
    sampled = {**generate, "options": {"temperature": 0.8}}
    assert twice(default, "/api/generate", sampled) == ["BYPASS", "BYPASS"]
    assert twice(default, "/api/generate", generate) == ["BYPASS", "BYPASS"]
    assert calls(ollama, "/api/generate") == 4
    greedy = {**generate, "options": {"temperature": 0}}
    assert twice(default, "/api/generate", greedy) == ["MISS", "HIT"]
    assert calls(ollama, "/api/generate") == 5


def test_cache_control_still_works_for_deterministic_requests(default, ollama):
    body = {"model": "llama3.2", "temperature": 0, "messages": fresh()}
    assert post(default, "/v1/chat/completions", body).headers["X-Cache"] == "MISS"
    fresh_reply = post(default, "/v1/chat/completions", body, **{"Cache-Control": "no-cache"})
    assert fresh_reply.headers["X-Cache"] == "BYPASS"
    assert post(default, "/v1/chat/completions", body).headers["X-Cache"] == "HIT"
    assert calls(ollama) == 2


# --- all and off --------------------------------------------------------------------------------


def test_all_caches_sampled_replies_on_every_face(cache_all, ollama):
    chat = {"model": "llama3.2", "temperature": 0.8, "messages": fresh()}
    assert twice(cache_all, "/v1/chat/completions", chat) == ["MISS", "HIT"]
    unset = {"model": "llama3.2", "messages": fresh()}
    assert twice(cache_all, "/v1/chat/completions", unset) == ["MISS", "HIT"]
    messages = {"model": "llama3.2", "max_tokens": 50, "temperature": 0.8, "messages": fresh()}
    assert twice(cache_all, "/v1/messages", messages) == ["MISS", "HIT"]
    native = {"model": "llama3.2", "messages": fresh(), "stream": False}
    assert twice(cache_all, "/api/chat", {**native, "options": {"temperature": 0.8}}) == [
        "MISS",
        "HIT",
    ]
    assert calls(ollama) == 4
    prompt = fresh("Once upon a time")[0]["content"]
    completion = {"model": "llama3.2", "prompt": prompt, "max_tokens": 5, "temperature": 0.8}
    assert twice(cache_all, "/v1/completions", completion) == ["MISS", "HIT"]
    assert calls(ollama, "/api/generate") == 1


def test_off_never_caches(cache_off, ollama):
    ollama.script("nomic-embed-text")
    chat = {"model": "llama3.2", "temperature": 0, "messages": fresh()}
    assert twice(cache_off, "/v1/chat/completions", chat) == ["BYPASS", "BYPASS"]
    seeded = {"model": "llama3.2", "seed": 1, "messages": fresh()}
    assert twice(cache_off, "/v1/chat/completions", seeded) == ["BYPASS", "BYPASS"]
    messages = {"model": "llama3.2", "max_tokens": 50, "temperature": 0, "messages": fresh()}
    assert twice(cache_off, "/v1/messages", messages) == ["BYPASS", "BYPASS"]
    native = {"model": "llama3.2", "messages": fresh(), "stream": False}
    assert twice(cache_off, "/api/chat", {**native, "options": {"temperature": 0}}) == [
        "BYPASS",
        "BYPASS",
    ]
    assert calls(ollama) == 8
    embed = {"model": "nomic-embed-text", "input": ["embed me"], "encoding_format": "float"}
    assert twice(cache_off, "/v1/embeddings", embed) == ["BYPASS", "BYPASS"]
    assert calls(ollama, "/api/embed") == 2


def test_the_environment_wins_over_the_file(start_gateway, fake_ollama, ollama, tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('[cache]\nmode = "off"\n')
    gw = start_gateway(env(fake_ollama, RELAY_CONFIG=str(config), RELAY_CACHE_MODE="all"))
    body = {"model": "llama3.2", "temperature": 0.8, "messages": fresh()}
    assert twice(gw, "/v1/chat/completions", body) == ["MISS", "HIT"]


def test_an_unknown_mode_stops_start_up_with_one_line():
    result = run_gunicorn({"RELAY_CACHE_MODE": "sometimes"})
    assert result.returncode == 2
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("relay: configuration error:")
    ]
    assert len(lines) == 1, result.stderr
    assert "RELAY_CACHE_MODE must be one of deterministic, all, off; got 'sometimes'" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
