"""Several hosts behind one backend: balancing, failover before the first byte only, hosts that
come back."""

from __future__ import annotations

import requests

from tests.conftest import free_port, wait_until
from tests.fakes.ollama import FakeOllama

BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}


def chats(fake: FakeOllama) -> int:
    return len([r for r in fake.requests if r.path == "/api/chat"])


def ask(gw, **body) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", json={**BODY, **body})


def test_requests_are_balanced_and_fail_over_to_a_live_host(start_gateway, fake_ollama, ollama):
    other = FakeOllama()
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        gw = start_gateway(
            {"OLLAMA_BASE_URL": f"{fake_ollama.url},{other.url},{dead}", "RELAY_CACHE_TTL": "0"}
        )
        statuses = [ask(gw).status_code for _ in range(12)]
        statuses += [ask(gw, stream=True).status_code for _ in range(4)]
        assert statuses == [200] * 16  # the dead host never showed through
        assert chats(ollama) >= 4 and chats(other) >= 4  # both live hosts took turns
        assert gw.logs().count("unreachable") <= 2  # marked down, then skipped
        ready = requests.get(gw.url + "/ready").json()["backends"]["ollama"]
        assert [h["state"] for h in ready["hosts"]] == ["up", "up", "down"]
        assert all("host" not in h for h in ready["hosts"])  # addresses: admin token only
    finally:
        other.close()


def test_a_busy_host_is_skipped_but_a_slow_one_is_not_retried(start_gateway, fake_ollama, ollama):
    other = FakeOllama()
    try:
        gw = start_gateway(
            {
                "OLLAMA_BASE_URL": f"{fake_ollama.url},{other.url}",
                "RELAY_READ_TIMEOUT": "0.5",
                "RELAY_CACHE_TTL": "0",
            }
        )
        ollama.script("llama3.2", status=503, error="server busy, please try again.")
        assert [ask(gw).status_code for _ in range(4)] == [200] * 4
        assert chats(other) == 4  # every request ended on the host that was not busy

        ollama.script("llama3.2", headers_delay=1.5)  # the request reached it: not safe to resend
        other.script("llama3.2", headers_delay=1.5)
        before = chats(ollama) + chats(other)
        assert ask(gw).status_code == 504
        assert chats(ollama) + chats(other) == before + 1
    finally:
        other.close()


def test_a_host_marked_down_comes_back(start_gateway, fake_ollama, ollama):
    port = free_port()
    gw = start_gateway(
        {"OLLAMA_BASE_URL": f"http://127.0.0.1:{port},{fake_ollama.url}", "RELAY_CACHE_TTL": "0"}
    )
    assert ask(gw).status_code == 200  # the first host is down: failover
    revived = FakeOllama(port=port)
    try:

        def served_by_revived() -> bool:
            assert ask(gw).status_code == 200
            return chats(revived) > 0

        wait_until(served_by_revived, timeout=15, step=0.2)  # after its back-off (2 s)
        wait_until(lambda: "is back" in gw.logs())
    finally:
        revived.close()
