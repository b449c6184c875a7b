"""Backpressure for GPU backends: requests in flight limited, a bounded queue fair between keys,
a deadline, clear 429/503 with Retry-After, and the figures in /ready."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import wait_until
from tests.fakes.ollama import FakeOllama

KEYS = ("sk-backpressure-key-a", "sk-backpressure-key-b")


def chat(gw, key: str, model: str = "llama3.2") -> requests.Response:
    return requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": key}]},
        headers={"Authorization": f"Bearer {key}"},
    )


def in_flight(ollama: FakeOllama) -> int:
    return len([r for r in ollama.requests if r.path == "/api/chat"])


def test_limit_queue_deadline_and_fairness(start_gateway, fake_ollama, ollama: FakeOllama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": ",".join(KEYS),
            "RELAY_MAX_IN_FLIGHT": "1",
            "RELAY_MAX_QUEUE": "3",
            "RELAY_QUEUE_TIMEOUT": "20",
            "RELAY_CACHE_TTL": "0",
        }
    )
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    a, b = KEYS
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(chat, gw, a)
        wait_until(lambda: in_flight(ollama) == 1)
        queued_a = [pool.submit(chat, gw, a) for _ in range(2)]
        wait_until(
            lambda: requests.get(gw.url + "/ready").json()["backends"]["ollama"]["queued"] == 2
        )
        queued_b = pool.submit(chat, gw, b)
        wait_until(
            lambda: requests.get(gw.url + "/ready").json()["backends"]["ollama"]["queued"] == 3
        )
        ready = requests.get(gw.url + "/ready").json()["backends"]["ollama"]
        assert (ready["in_flight"], ready["queued"], ready["max_in_flight"]) == (1, 3, 1)
        metrics = requests.get(gw.url + "/metrics").text
        assert 'relay_backend_in_flight{backend="ollama"} 1.0' in metrics
        assert 'relay_backend_queued{backend="ollama"} 3.0' in metrics

        refused = chat(gw, b)  # the queue is full
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "backend_busy"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert in_flight(ollama) == 1  # nothing piled onto the backend

        gate.set()
        results = [f.result() for f in (first, *queued_a, queued_b)]
    assert [r.status_code for r in results] == [200, 200, 200, 200]
    order = [r.body["messages"][0]["content"] for r in ollama.requests if r.path == "/api/chat"]
    # b waited behind only one of a's queued requests, not both: keys take turns.
    assert order == [a, a, b, a]


def test_queued_request_past_the_deadline_is_503(start_gateway, fake_ollama, ollama: FakeOllama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": KEYS[0],
            "RELAY_MAX_IN_FLIGHT": "1",
            "RELAY_MAX_QUEUE": "1",
            "RELAY_QUEUE_TIMEOUT": "0.5",
            "RELAY_CACHE_TTL": "0",
        }
    )
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, gw, KEYS[0])
        wait_until(lambda: in_flight(ollama) == 1)
        late = chat(gw, KEYS[0])
        assert late.status_code == 503
        assert late.json()["error"]["code"] == "backend_queue_timeout"
        assert late.headers["Retry-After"] == "1"
        gate.set()
        assert first.result().status_code == 200
    # The slot comes back once the stream or request ends.
    assert chat(gw, KEYS[0]).status_code == 200
