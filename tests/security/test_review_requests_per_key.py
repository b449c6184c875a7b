"""One key cannot take every connection of a worker with requests that are slow to finish.

The upload cap (RELAY_MAX_UPLOADS_PER_KEY) counts only bodies still arriving: once a body was
in, a key could open as many requests as the worker had connections, e.g. to a slow upstream
path or with replies it never reads, and `/health` and every other key timed out (issue 11,
finding 6 asked for a per-key cap on concurrent connections).
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.conftest import API_KEY
from tests.fakes.openai_upstream import Reply
from tests.security.passthrough_setup import passthrough_config, serve_chat_upstream

OTHER = "sk-review-other-key-0007"
CAP = 4
CONNECTIONS = 30


@pytest.fixture(scope="module")
def upstream():
    yield from serve_chat_upstream()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    path = passthrough_config(tmp_path_factory.mktemp("inflight"), upstream, other=(OTHER, None))
    return start_module_gateway(
        {
            "RELAY_CONFIG": str(path),
            "RELAY_API_KEYS": API_KEY,
            "UP_KEY": "up",
            "RELAY_WORKERS": "1",
            "RELAY_WORKER_CONNECTIONS": str(CONNECTIONS),
            "RELAY_MAX_REQUESTS_PER_KEY": str(CAP),
        }
    )


def _open_slow_requests(gw, n: int) -> list[socket.socket]:
    body = b'{"input": "x"}'
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock.sendall(
            b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        socks.append(sock)
    return socks


def _status(sock: socket.socket) -> bytes:
    return sock.recv(64).split(b"\r\n", 1)[0]


def test_one_key_cannot_fill_the_worker(gw, upstream):
    upstream.reply = Reply(delay=8)
    socks = _open_slow_requests(gw, CONNECTIONS + 10)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        # Refused connections linger up to 2 s (request_body.py), then free their place.
        assert requests.get(gw.url + "/health", timeout=5).status_code == 200
        other = requests.get(  # a route that asks no upstream (the fake is busy)
            gw.url + "/v1/responses/resp_none",
            headers={"Authorization": f"Bearer {OTHER}"},
            timeout=5,
        )
        assert other.status_code == 404
        assert time.monotonic() - started < 5
        refused = [s for s in socks if _status(s).startswith(b"HTTP/1.1 429")]
        assert len(refused) >= CONNECTIONS + 10 - CAP
    finally:
        for sock in socks:
            sock.close()
        upstream.reply = Reply()


def test_the_count_is_given_back_when_requests_end(gw, upstream):
    upstream.reply = Reply()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for _ in range(CAP * 3):  # one after another: never more than one in flight
        assert requests.post(gw.url + "/v1/moderations", json={"input": "x"}, headers=headers)
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    for _ in range(CAP * 2):  # streams too, once read to their end
        resp = requests.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        assert resp.status_code == 200 and b"[DONE]" in resp.content
    for _ in range(CAP * 2):  # errors too
        resp = requests.post(gw.url + "/v1/chat/completions", json={}, headers=headers)
        assert resp.status_code == 400
    resp = requests.post(gw.url + "/v1/moderations", json={"input": "x"}, headers=headers)
    assert resp.status_code == 200
