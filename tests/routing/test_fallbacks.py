"""Model groups: fallbacks before the first byte only, the retry budget, the circuit breaker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import requests

from tests.conftest import API_KEY, free_port, wait_until
from tests.fakes.ollama import FakeOllama
from tests.routing.conftest import ADMIN, access_lines, chat, chats, ready

GROUP = """
[models."smart"]
targets = [
  {model = "llama3.2", backend = "a"},
  {model = "qwen3:8b", backend = "b"},
]
"""


def test_a_group_falls_back_when_the_first_target_is_down(routed, ollama, second):
    gw = routed(
        """
[models."smart"]
targets = [{model = "llama3.2", backend = "dead"}, {model = "qwen3:8b", backend = "b"}]
"""
    )
    reply = chat(gw, "smart")
    assert reply.status_code == 200 and reply.json()["model"] == "smart"
    assert reply.headers["X-Relay-Route"] == "b/qwen3:8b"
    streamed = chat(gw, "smart", stream=True)
    assert streamed.status_code == 200 and b"[DONE]" in streamed.content
    assert streamed.headers["X-Relay-Route"] == "b/qwen3:8b"
    assert chats(second, "qwen3:8b") == 2
    logs = gw.logs()
    assert "attempt 1 on dead/llama3.2 failed (unavailable: 503)" in logs
    assert "key=" in logs and API_KEY not in logs


def test_a_group_falls_back_when_the_first_answers_busy(routed, ollama, second, vllm):
    gw = routed(
        """
[models."smart"]
targets = [
  {model = "llama3.2", backend = "a"},
  {model = "gpt-test", backend = "vllm"},
  {model = "qwen3:8b", backend = "b"},
]
"""
    )
    ollama.script("llama3.2", status=503, error="server busy, please try again.")
    vllm.reply.status, vllm.reply.error = 429, {"message": "slow down", "type": "requests"}
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raw.parse().model == "smart"
    assert raw.headers["X-Relay-Route"] == "b/qwen3:8b"
    assert chats(ollama) == 1 and len(vllm.requests) == 1 and chats(second) == 1
    assert "(busy: 429)" in gw.logs()
    metrics = requests.get(gw.url + "/metrics").text
    assert 'relay_route_fallbacks_total{reason="unavailable"} 1.0' in metrics
    assert 'relay_route_fallbacks_total{reason="busy"} 1.0' in metrics


def test_a_group_falls_back_when_relays_own_queue_is_full(routed, ollama, second):
    gw = routed(GROUP, backends="max_in_flight = 1\nmax_queue = 0")
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, gw, "llama3.2")  # takes backend a's only slot
        wait_until(lambda: chats(ollama) == 1)
        try:
            reply = chat(gw, "smart")
            assert reply.status_code == 200
            assert reply.headers["X-Relay-Route"] == "b/qwen3:8b"
            streamed = chat(gw, "smart", stream=True)
            assert streamed.headers["X-Relay-Route"] == "b/qwen3:8b"
        finally:
            gate.set()
        assert held.result().status_code == 200
    assert chats(ollama) == 1 and chats(second) == 2
    assert "(queue_full: 429)" in gw.logs()


def test_no_fallback_after_the_first_byte_of_a_stream(routed, ollama, second):
    gw = routed(GROUP)
    ollama.script("llama3.2", midstream_error="CUDA error: out of memory")
    reply = chat(gw, "smart", stream=True)
    assert reply.status_code == 200
    assert reply.headers["X-Relay-Route"] == "a/llama3.2"
    body = reply.text
    assert "Hello" in body and '"error"' in body and "out of memory" in body  # in-band
    assert chats(second) == 0


def test_a_request_the_upstream_refuses_is_not_retried(routed, ollama, second):
    gw = routed(GROUP)
    ollama.script("llama3.2", status=400, error="invalid format: expected json")
    reply = chat(gw, "smart")
    assert reply.status_code == 400 and "invalid format" in reply.json()["error"]["message"]
    assert "X-Relay-Route" not in reply.headers
    assert chats(second) == 0
    # A context window the first target is too small for: the next may be larger.
    ollama.script("llama3.2", status=400, error="the input length exceeds the context length")
    reply = chat(gw, "smart")
    assert reply.status_code == 200 and reply.headers["X-Relay-Route"] == "b/qwen3:8b"
    assert "(context_window: 400)" in gw.logs()


def test_the_retry_budget_caps_attempts_and_time(routed, ollama, second, vllm):
    gw = routed(
        """
[models."wide"]
targets = [
  {model = "llama3.2", backend = "a"},
  {model = "gpt-test", backend = "vllm"},
  {model = "qwen3:8b", backend = "b"},
]
""",
        RELAY_ROUTE_MAX_ATTEMPTS="2",
        RELAY_ROUTE_DEADLINE_SECONDS="0.5",
    )
    ollama.script("llama3.2", status=500, error="model runner crashed")
    vllm.reply.status = 500
    reply = chat(gw, "wide")
    assert reply.status_code == 502  # the last target tried; the third never was
    assert chats(ollama) == 1 and len(vllm.requests) == 1 and chats(second) == 0
    assert "stops after 2 attempt(s) (attempts)" in gw.logs()

    # The deadline: the first target took longer than it, so no second target is tried.
    ollama.script("llama3.2", status=500, error="model runner crashed", headers_delay=0.7)
    vllm.reset()
    started = time.monotonic()
    reply = chat(gw, "wide")
    assert reply.status_code == 502 and time.monotonic() - started < 3
    assert len(vllm.requests) == 0 and chats(second) == 0
    assert "stops after 1 attempt(s) (deadline)" in gw.logs()


def test_weights_share_the_load_within_ten_percent(routed, ollama, second):
    gw = routed(
        """
[models."shared"]
targets = [
  {model = "llama3.2", backend = "a", weight = 3, priority = 1},
  {model = "llama3.2", backend = "b", weight = 1, priority = 1},
]
"""
    )
    second.script("llama3.2")
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        body = {"model": "shared", "messages": [{"role": "user", "content": "Hi"}]}
        for _ in range(1000):
            assert session.post(gw.url + "/v1/chat/completions", json=body).status_code == 200
    a, b = chats(ollama), chats(second)
    assert a + b == 1000
    assert abs(a - 750) <= 75 and abs(b - 250) <= 25, (a, b)


def test_a_failing_target_opens_its_circuit_and_closes_on_return(routed, ollama, second):
    port = free_port()
    gw = routed(
        f"""
[backends.flaky]
type = "ollama"
url = "http://127.0.0.1:{port}"
models = []

[models."smart"]
targets = [{{model = "llama3.2", backend = "flaky"}}, {{model = "qwen3:8b", backend = "b"}}]
""",
        RELAY_ROUTE_BREAKER_FAILURES="2",
        RELAY_ROUTE_BREAKER_SECONDS="1",
    )

    def state() -> str:
        routes = {r["target"]: r for r in ready(gw)["routes"]}
        return routes["flaky/llama3.2"]["state"]

    assert state() == "closed"
    assert [chat(gw, "smart").status_code for _ in range(2)] == [200, 200]
    assert state() == "open" and "circuit open" in gw.logs()
    assert (
        'relay_route_target_open{target="flaky/llama3.2"} 1.0'
        in requests.get(gw.url + "/metrics").text
    )
    tried = gw.logs().count("attempt 1 on flaky/llama3.2")
    assert chat(gw, "smart").headers["X-Relay-Route"] == "b/qwen3:8b"
    assert gw.logs().count("attempt 1 on flaky/llama3.2") == tried  # skipped while open
    public = requests.get(gw.url + "/ready").json()["routes"]
    assert {"state": "open"} in public and "flaky" not in str(public)  # names: token only

    revived = FakeOllama(port=port)
    try:

        def answered_by_flaky() -> bool:
            return chat(gw, "smart").headers.get("X-Relay-Route") == "flaky/llama3.2"

        wait_until(answered_by_flaky, timeout=10, step=0.2)  # half-open after 1 s: one probe
        assert state() == "closed" and "circuit closed" in gw.logs()
        assert (
            'relay_route_target_open{target="flaky/llama3.2"} 0.0'
            in requests.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
        )
    finally:
        revived.close()


def test_the_access_log_names_the_target_a_late_stream_started_on(routed, ollama, second):
    gw = routed(GROUP, RELAY_KEEPALIVE_SECONDS="0.1")
    ollama.script("llama3.2", headers_delay=0.4, status=503, error="busy")
    reply = chat(gw, "smart", stream=True)
    assert b": keep-alive" in reply.content and b"[DONE]" in reply.content
    assert "X-Relay-Route" not in reply.headers  # the headers went out before it started
    wait_until(lambda: access_lines(gw))
    line = access_lines(gw)[-1]
    assert "backend=b" in line and "route=b/qwen3:8b" in line
