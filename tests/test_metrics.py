"""/metrics under two gunicorn workers: counts add up across processes; access is restricted."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama

CHAT = "/v1/chat/completions"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def test_metrics_count_a_known_mix_across_two_workers(
    start_gateway, fake_ollama, ollama: FakeOllama, tmp_path
):
    metrics_dir = tmp_path / "metrics"
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    ollama.script("llama3.2", content=["a", "b"], prompt_eval_count=10, eval_count=4)
    ollama.script("broken", status=500, error="runner crashed")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}

    def chat_once(_: int) -> int:
        return requests.post(gw.url + CHAT, json=body, headers=auth).status_code

    # Concurrent batches on new connections until both workers have answered some.
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while len(list(metrics_dir.glob("counter_*.db"))) < 2 and sent < 400:
            assert set(pool.map(chat_once, range(8))) == {200}
            sent += 8
    for _ in range(3):
        resp = requests.post(gw.url + CHAT, json={**body, "stream": True}, headers=auth)
        assert resp.text.endswith("data: [DONE]\n\n")
    assert (
        requests.post(gw.url + CHAT, json={**body, "model": "broken"}, headers=auth).status_code
        == 502
    )
    assert requests.post(gw.url + CHAT, json=body).status_code == 401

    def scraped_all():
        samples = scrape(gw.url)
        return total(samples, "relay_requests_total", route=CHAT) == sent + 5 and samples

    wait_until(scraped_all, timeout=10)
    samples = scrape(gw.url)
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # both workers recorded
    ok = {"route": CHAT, "model": "llama3.2", "backend": "ollama", "status": "200"}
    assert total(samples, "relay_requests_total", **ok) == sent + 3
    assert total(samples, "relay_requests_total", route=CHAT, status="401", key="-") == 1
    assert total(samples, "relay_tokens_total", direction="in", model="llama3.2") == 10 * (sent + 3)
    assert total(samples, "relay_tokens_total", direction="out", model="llama3.2") == 4 * (sent + 3)
    assert total(samples, "relay_time_to_first_token_seconds_count", route=CHAT) == 3
    assert total(samples, "relay_request_duration_seconds_count", route=CHAT, stream="yes") == 3
    assert total(samples, "relay_upstream_errors_total", backend="ollama", kind="bad_reply") == 1
    assert total(samples, "relay_streams_in_flight") == 0


def test_metrics_only_for_allowed_addresses_or_the_admin_token(start_gateway, fake_ollama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_METRICS_ALLOW": "127.0.0.1",
            "RELAY_METRICS_TOKEN": "metrics-admin-token",
        }
    )

    def get(headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, source_address=("127.0.0.7", 0))
        conn.request("GET", "/metrics", headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status

    assert get({}) == 403
    assert get({"Authorization": "Bearer wrong"}) == 403
    assert get({"Authorization": "Bearer metrics-admin-token"}) == 200
    assert requests.get(gw.url + "/metrics").status_code == 200  # from 127.0.0.1


def test_rate_limit_and_cache_metrics(start_gateway, fake_ollama, ollama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_REQUESTS_PER_MINUTE": "3",
        }
    )
    auth = {"Authorization": f"Bearer {API_KEY}"}
    body = {
        "model": "llama3.2",
        "temperature": 0,
        "messages": [{"role": "user", "content": "same"}],
    }
    statuses = [requests.post(gw.url + CHAT, json=body, headers=auth).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    samples = scrape(gw.url)
    assert total(samples, "relay_rate_limited_total", kind="requests") == 2
    assert total(samples, "relay_cache_total", result="miss") == 1
    assert total(samples, "relay_cache_total", result="hit") == 2
