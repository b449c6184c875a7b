"""The reply cache through the gateway: HIT/MISS/BYPASS, Cache-Control, tenant isolation,
what is never stored, in-flight sharing, and cached replies replayed as streams.

Chat and completions requests here send `temperature: 0`: by default only deterministic
requests are cached (tests/test_cache_sampling.py covers that rule)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama

OTHER_KEY = "sk-relay-test-key-0002"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Hi"}]


def chats(fake: FakeOllama) -> int:
    return len([r for r in fake.requests if r.path == "/api/chat"])


@pytest.fixture(scope="module")
def cached(start_module_gateway, fake_ollama):
    env = {
        "OLLAMA_BASE_URL": fake_ollama.url,
        "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "LOG_LEVEL": "debug",
    }
    return start_module_gateway(env)


def post(gw, body: object, key: str = API_KEY, **headers: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(gw.url + "/v1/chat/completions", data=data, headers=headers)


def test_miss_then_hit_whatever_the_json_key_order(cached, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Cached", " answer"])
    first = post(
        cached,
        '{"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "A"}]}',
    )
    second = post(
        cached,
        '{"messages": [{"content": "A", "role": "user"}], "temperature": 0, "model": "llama3.2"}',
    )
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.json()["choices"][0]["message"]["content"] == "Cached answer"
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["id"] != first.json()["id"]
    assert chats(ollama) == 1
    # Any field that can change the answer makes another entry.
    third = post(
        cached,
        {
            "model": "llama3.2",
            "temperature": 0,
            "top_p": 0.5,
            "messages": [{"role": "user", "content": "A"}],
        },
    )
    assert third.headers["X-Cache"] == "MISS" and chats(ollama) == 2
    assert "cache=HIT" in cached.logs()


def test_cache_control_no_cache_skips_reading_and_no_store_skips_storing(cached, ollama):
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "B"}]}
    assert post(cached, body, **{"Cache-Control": "no-store"}).headers["X-Cache"] == "MISS"
    assert post(cached, body).headers["X-Cache"] == "MISS"  # the no-store reply was not kept
    assert post(cached, body).headers["X-Cache"] == "HIT"
    fresh = post(cached, body, **{"Cache-Control": "no-cache"})
    assert fresh.headers["X-Cache"] == "BYPASS"
    assert chats(ollama) == 3
    sdk = openai.OpenAI(base_url=cached.url + "/v1", api_key=API_KEY, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model="llama3.2",
        messages=body["messages"],
        temperature=0,
        extra_headers={"Cache-Control": "no-cache"},
    )
    assert raw.headers["X-Cache"] == "BYPASS" and chats(ollama) == 4


def test_every_v1_response_says_x_cache(cached, ollama):
    assert requests.get(cached.url + "/v1/models", headers=AUTH).headers["X-Cache"] == "BYPASS"
    assert requests.get(cached.url + "/v1/models").headers["X-Cache"] == "BYPASS"  # 401
    bad = post(cached, {"model": "llama3.2"})
    assert bad.status_code == 400 and bad.headers["X-Cache"] == "BYPASS"
    missing = post(cached, {"model": "nope", "messages": USER})
    assert missing.status_code == 404 and missing.headers["X-Cache"] == "BYPASS"  # not routed
    assert "X-Cache" not in requests.get(cached.url + "/health").headers


def test_one_key_never_gets_another_keys_cached_reply(cached, ollama):
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "C"}]}
    assert post(cached, body).headers["X-Cache"] == "MISS"
    assert post(cached, body, key=OTHER_KEY).headers["X-Cache"] == "MISS"
    assert post(cached, body, key=OTHER_KEY).headers["X-Cache"] == "HIT"
    assert chats(ollama) == 2


def test_keys_in_one_cache_group_share_replies(start_gateway, fake_ollama, ollama, tmp_path):
    from tests.test_keys import sha

    config = tmp_path / "relay.toml"
    config.write_text(
        f'[keys.a]\nhash = "{sha(API_KEY)}"\ncache_group = "team"\n\n'
        f'[keys.b]\nhash = "{sha(OTHER_KEY)}"\ncache_group = "team"\n'
    )
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_CONFIG": str(config)})
    body = {"model": "llama3.2", "temperature": 0, "messages": USER}
    assert post(gw, body).headers["X-Cache"] == "MISS"
    assert post(gw, body, key=OTHER_KEY).headers["X-Cache"] == "HIT"


def test_errors_and_cut_off_replies_are_not_stored(cached, ollama):
    ollama.script("qwen3:8b", status=500, error="boom")
    body = {"model": "qwen3:8b", "temperature": 0, "messages": [{"role": "user", "content": "D"}]}
    assert post(cached, body).status_code == 502
    ollama.script("qwen3:8b", done_reason="length")
    cut = post(cached, body)
    assert cut.status_code == 200 and cut.json()["choices"][0]["finish_reason"] == "length"
    assert cut.headers["X-Cache"] == "MISS"
    assert post(cached, body).headers["X-Cache"] == "MISS"
    assert chats(ollama) == 3


def test_ten_identical_concurrent_requests_make_one_upstream_call(cached, ollama):
    gate = threading.Event()
    ollama.script("llama3.2", content=["Shared"], gate=gate)
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "E"}]}
    waiting_before = cached.logs().count("waiting for an identical request")
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(post, cached, body) for _ in range(10)]
        wait_until(
            lambda: cached.logs().count("waiting for an identical request") - waiting_before == 9,
            timeout=20,
        )
        gate.set()
        replies = [f.result() for f in futures]
    assert [r.status_code for r in replies] == [200] * 10
    assert {r.json()["choices"][0]["message"]["content"] for r in replies} == {"Shared"}
    assert sorted(r.headers["X-Cache"] for r in replies) == ["HIT"] * 9 + ["MISS"]
    assert chats(ollama) == 1


def sse_frames(resp: requests.Response) -> list[str]:
    text = resp.content.decode()
    assert text.endswith("data: [DONE]\n\n")
    return [f.removeprefix("data: ") for f in text.split("\n\n") if f]


def test_a_cached_reply_is_replayed_as_a_real_stream(cached, ollama):
    ollama.script("llama3.2", content=["Replayed", " reply"], prompt_eval_count=3, eval_count=2)
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "F"}]}
    assert post(cached, body).headers["X-Cache"] == "MISS"
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    resp = post(cached, streamed)
    assert resp.headers["X-Cache"] == "HIT"
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    frames = sse_frames(resp)
    chunks = [json.loads(f) for f in frames[:-1]]
    assert frames[-1] == "[DONE]"
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Replayed reply"
    sdk = openai.OpenAI(base_url=cached.url + "/v1", api_key=API_KEY, max_retries=0)
    stream = sdk.chat.completions.create(
        model="llama3.2", messages=body["messages"], temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    assert chats(ollama) == 1


def test_a_finished_live_stream_fills_the_cache(cached, ollama):
    ollama.script("llama3.2", content=["Live", " one"])
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "G"}]}
    live = post(cached, {**body, "stream": True})
    assert live.headers["X-Cache"] == "MISS" and sse_frames(live)
    after = post(cached, body)
    assert after.headers["X-Cache"] == "HIT"
    assert after.json()["choices"][0]["message"]["content"] == "Live one"
    assert chats(ollama) == 1
    # A stream that ends in an error is not stored.
    ollama.script("qwen3:8b", midstream_error="boom")
    broken = {"model": "qwen3:8b", "temperature": 0, "messages": [{"role": "user", "content": "G"}]}
    assert '"error"' in post(cached, {**broken, "stream": True}).text
    ollama.script("qwen3:8b")
    assert post(cached, broken).headers["X-Cache"] == "MISS"


def test_dify_replies_and_the_api_alias(start_gateway, cached, ollama, tmp_path):
    from tests.dify.conftest import ENV_NAMES, KEYS, chat_requests, dify_config
    from tests.fakes.dify import FakeDify

    # The /api alias of the chat route goes through the same cache.
    body = {"model": "llama3.2", "temperature": 0, "messages": [{"role": "user", "content": "H"}]}
    url = cached.url + "/api/chat/completions"
    assert requests.post(url, json=body, headers=AUTH).headers["X-Cache"] == "MISS"
    assert requests.post(url, json=body, headers=AUTH).headers["X-Cache"] == "HIT"

    # A Dify app keeps conversation state upstream: every turn must reach it.
    fake = FakeDify()
    try:
        for name, (key, mode) in KEYS.items():
            fake.add_app(key, mode, name=name)
        env = {"RELAY_CONFIG": dify_config(tmp_path, fake.url), "RELAY_API_KEYS": API_KEY}
        env.update({ENV_NAMES[app]: key for app, (key, _mode) in KEYS.items()})
        gw = start_gateway(env)
        body = {
            "model": "chatbot",
            "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        statuses = [post(gw, body).headers["X-Cache"] for _ in range(2)]
        assert statuses == ["BYPASS", "BYPASS"]
        assert len(chat_requests(fake)) == 2
    finally:
        fake.close()


def test_openai_compatible_replies_are_cached_too(start_gateway, fake_openai_chat, tmp_path):
    fake_openai_chat.reset()
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[backends.up]\ntype = "openai"\nurl = "{fake_openai_chat.url}/v1"\nmodels = ["gpt-*"]\n'
    )
    gw = start_gateway({"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY})
    body = {"model": "gpt-test", "temperature": 0, "messages": USER}
    assert [post(gw, body).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert len([r for r in fake_openai_chat.requests if r.method == "POST"]) == 1


def test_embeddings_and_completions_are_cached_per_tenant(cached, ollama):
    def call(path: str, body: dict, key: str = API_KEY) -> requests.Response:
        return requests.post(
            cached.url + path, json=body, headers={"Authorization": f"Bearer {key}"}
        )

    def upstream(path: str) -> int:
        return len([r for r in ollama.requests if r.path == path])

    ollama.script("nomic-embed-text")
    embed = {"model": "nomic-embed-text", "input": ["cache me"], "encoding_format": "float"}
    first, second = call("/v1/embeddings", embed), call("/v1/embeddings", embed)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.json()["data"] == second.json()["data"] and upstream("/api/embed") == 1
    assert call("/v1/embeddings", embed, OTHER_KEY).headers["X-Cache"] == "MISS"

    complete = {
        "model": "llama3.2",
        "prompt": ["Once upon", "a time"],
        "max_tokens": 5,
        "temperature": 0,
    }
    first, second = call("/v1/completions", complete), call("/v1/completions", complete)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert [c["text"] for c in first.json()["choices"]] == [
        c["text"] for c in second.json()["choices"]
    ]
    assert upstream("/api/generate") == 2  # one per prompt, once
