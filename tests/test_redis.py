"""With REDIS_URL, several workers and several gateways behave as one; without Redis reachable,
the gateway keeps answering. Redis is a real redis-server started and stopped by the tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama
from tests.test_cache_http import chats, post
from tests.test_ratelimit import AUTH, assert_exactly, concurrent_posts


def redis_env(fake: FakeOllama, redis_url: str, **extra: str) -> dict[str, str]:
    return {"OLLAMA_BASE_URL": fake.url, "RELAY_API_KEYS": API_KEY, "REDIS_URL": redis_url, **extra}


def test_exactly_n_admitted_across_four_workers(start_gateway, fake_ollama, ollama, redis_server):
    env = redis_env(
        fake_ollama,
        redis_server.url,
        RELAY_WORKERS="4",
        RELAY_REQUESTS_PER_MINUTE="6",
        RELAY_CACHE_TTL="0",  # identical requests must each reach the fake here
    )
    gw = start_gateway(env)
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    assert_exactly(concurrent_posts([gw.url], 16, ollama, gate), admitted=6)


def test_exactly_n_admitted_across_two_gateways(start_gateway, fake_ollama, ollama, redis_server):
    env = redis_env(
        fake_ollama, redis_server.url, RELAY_REQUESTS_PER_MINUTE="5", RELAY_CACHE_TTL="0"
    )
    one, two = start_gateway(env), start_gateway(env)
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    assert_exactly(concurrent_posts([one.url, two.url], 14, ollama, gate), admitted=5)
    assert requests.get(one.url + "/v1/models", headers=AUTH).status_code == 429


def test_two_gateways_share_the_cache_and_in_flight_work(
    start_gateway, fake_ollama, ollama, redis_server
):
    env = redis_env(fake_ollama, redis_server.url, LOG_LEVEL="debug", RELAY_WORKERS="2")
    gateways = [start_gateway(env), start_gateway(env)]
    gate = threading.Event()
    ollama.script("llama3.2", content=["Once"], gate=gate)
    body = {
        "model": "llama3.2",
        "temperature": 0,
        "messages": [{"role": "user", "content": "shared"}],
    }

    def waiting() -> int:
        return sum(g.logs().count("waiting for an identical request") for g in gateways)

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(post, gateways[i % 2], body) for i in range(10)]
        wait_until(lambda: waiting() == 9, timeout=20)
        gate.set()
        replies = [f.result() for f in futures]
    assert {r.json()["choices"][0]["message"]["content"] for r in replies} == {"Once"}
    assert sorted(r.headers["X-Cache"] for r in replies) == ["HIT"] * 9 + ["MISS"]
    assert chats(ollama) == 1
    assert post(gateways[1], body).headers["X-Cache"] == "HIT"


def test_redis_stopping_mid_test_never_stops_the_answers(
    start_gateway, fake_ollama, ollama, redis_server
):
    env = redis_env(fake_ollama, redis_server.url, RELAY_REQUESTS_PER_MINUTE="1000")
    gw = start_gateway(env)
    body = {
        "model": "llama3.2",
        "temperature": 0,
        "messages": [{"role": "user", "content": "outage"}],
    }
    assert post(gw, body).headers["X-Cache"] == "MISS"
    assert post(gw, body).headers["X-Cache"] == "HIT"

    redis_server.stop()
    for _ in range(5):
        resp = post(gw, body)
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Cache"] == "BYPASS"  # the cache is skipped, limits fail open
        stream = post(gw, {**body, "stream": True})
        assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
    assert requests.get(gw.url + "/v1/models", headers=AUTH).status_code == 200
    logs = gw.logs()
    assert "is unreachable" in logs and "Traceback" not in logs
    assert logs.count("is unreachable") == 1  # once per outage, not once per request

    redis_server.start()  # same port: the gateway finds it again within a second or so
    wait_until(lambda: post(gw, body).headers["X-Cache"] in ("HIT", "MISS"))
    resp = post(gw, body)
    assert resp.headers["X-Cache"] == "HIT" and "x-ratelimit-limit-requests" in resp.headers
    assert "reachable again" in gw.logs()


def test_limits_can_fail_closed_when_redis_is_down(
    start_gateway, fake_ollama, ollama, redis_server
):
    env = redis_env(
        fake_ollama,
        redis_server.url,
        RELAY_REQUESTS_PER_MINUTE="1000",
        RELAY_LIMITS_FAIL_OPEN="false",
    )
    gw = start_gateway(env)
    assert requests.get(gw.url + "/v1/models", headers=AUTH).status_code == 200
    redis_server.stop()
    for _ in range(3):
        resp = requests.get(gw.url + "/v1/models", headers=AUTH)
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["code"] == "rate_limiter_unavailable"
        assert error["type"] == "service_unavailable_error"
    assert requests.get(gw.url + "/health").status_code == 200
    assert "Traceback" not in gw.logs()
