"""Request bodies at the gateway itself (issue 11): the size limit whatever the framing, a
deadline for the whole body, and a per-key cap on bodies still arriving. Raw sockets, because
the attack is in how the bytes are framed and paced."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI

SLOW_KEY, OTHER_KEY = "sk-relay-slow-uploader-01", "sk-relay-other-caller-02"
LIMIT = 65536  # RELAY_MAX_BODY_BYTES for these gateways
CAP = 8  # RELAY_MAX_UPLOADS_PER_KEY
DEADLINE = 2  # RELAY_BODY_TIMEOUT_SECONDS
JSON_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/images/generations",
    "/api/chat/completions",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gateway(start_module_gateway, fake_ollama, upstream, tmp_path_factory):
    config = tmp_path_factory.mktemp("bodies") / "relay.toml"
    config.write_text(
        f'[backends.ollama]\ntype = "ollama"\nurl = "{fake_ollama.url}"\nmodels = ["llama*"]\n'
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nmodels = ["gpt-*"]\n'
        "passthrough = true\n"
    )
    return start_module_gateway(
        {
            "RELAY_CONFIG": str(config),
            "RELAY_API_KEYS": f"{SLOW_KEY},{OTHER_KEY}",
            "RELAY_CACHE_TTL": "0",
            "RELAY_MAX_BODY_BYTES": str(LIMIT),
            "RELAY_MAX_UPLOADS_PER_KEY": str(CAP),
            "RELAY_BODY_TIMEOUT_SECONDS": str(DEADLINE),
        }
    )


def send_head(port: int, path: str, framing: str, key: str = SLOW_KEY) -> socket.socket:
    """Open a connection and send a POST's headers; the body is the caller's to send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def response_of(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body)


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ends the connection (EOF or reset) instead of waiting for more."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def chunked(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def chat_body(padding: int) -> bytes:
    return json.dumps(
        {"model": "llama3.2", "messages": [{"role": "user", "content": "x" * padding}]}
    ).encode()


# --- the size limit, whatever the framing ---------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_chunked_body_over_the_limit_is_413_on_every_json_route(gateway, path):
    sock = send_head(gateway.port, path, "Transfer-Encoding: chunked")
    try:
        # Many times the limit: before the fix it was cut at the limit and read as bad JSON.
        for frame in chunked(chat_body(LIMIT * 8)):
            sock.sendall(frame)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway may stop reading once it has answered
    status, _headers, body = response_of(sock)
    sock.close()
    assert status == 413, body
    assert body["error"]["code"] == "request_too_large"
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_content_length_over_the_limit_is_413_before_the_body(gateway, path):
    # Only the headers are sent: the answer must not wait for (or read) the promised body.
    sock = send_head(gateway.port, path, f"Content-Length: {50 * 1024 * 1024}")
    status, headers, body = response_of(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert headers["connection"] == "close"
    assert closed_by_server(sock)  # the 50 MB that would follow are never read
    sock.close()


def test_chunked_body_under_the_limit_works(gateway, ollama: FakeOllama):
    sock = send_head(gateway.port, "/v1/chat/completions", "Transfer-Encoding: chunked")
    for frame in chunked(chat_body(LIMIT // 2), size=1000):
        sock.sendall(frame)
    status, headers, body = response_of(sock)
    sock.close()
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    # A body read in full leaves it reusable (HTTP/1.1's default when the answer says nothing).
    assert headers.get("connection", "keep-alive") == "keep-alive"


# --- slow bodies: a deadline, and a cap per key ---------------------------------------------


def test_slow_bodies_from_one_key_cannot_take_the_workers_connections(gateway, ollama):
    uploads = 40
    socks = [
        send_head(gateway.port, "/v1/chat/completions", "Content-Length: 1000")
        for _ in range(uploads)
    ]
    for sock in socks:
        sock.sendall(b'{"model": ')  # a few bytes, then nothing
    try:
        # Everyone else is served at once: the health check, and another key.
        assert requests.get(gateway.url + "/health", timeout=10).status_code == 200
        other = requests.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {OTHER_KEY}"},
            timeout=10,
        )
        assert other.status_code == 200, other.text
        answers = [response_of(sock) for sock in socks]
        statuses = sorted(status for status, _headers, _body in answers)
        # CAP bodies are waited for until the deadline, the rest are refused at once.
        assert statuses == [408] * CAP + [429] * (uploads - CAP)
        for status, headers, body in answers:
            assert headers["connection"] == "close"  # nobody may reuse it: the body is unread
            if status == 429:
                assert headers["retry-after"] == "1"
                assert body["error"]["code"] == "too_many_uploads"
            else:
                assert body["error"]["code"] == "request_timeout"
                assert body["error"]["type"] == "invalid_request_error"
        assert all(closed_by_server(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    # The slots are free again once the slow bodies are gone.
    again = requests.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {SLOW_KEY}"},
        timeout=10,
    )
    assert again.status_code == 200, again.text


def test_a_burst_of_bodies_that_arrive_promptly_is_never_capped(gateway, ollama):
    # Three times the cap of one key's bodies are all mid-way at once, then finish within the
    # second a body may take before it counts as slow: a busy client, not a slow one.
    body = chat_body(10)
    socks = [
        send_head(gateway.port, "/v1/chat/completions", f"Content-Length: {len(body)}")
        for _ in range(3 * CAP)
    ]
    try:
        for sock in socks:
            sock.sendall(body[:5])
        time.sleep(0.1)
        for sock in socks:
            sock.sendall(body[5:])
        statuses = [response_of(sock)[0] for sock in socks]
        assert statuses == [200] * (3 * CAP)
    finally:
        for sock in socks:
            sock.close()


def test_streams_being_generated_do_not_count_as_uploads(gateway, ollama):
    ollama.script("llama3.2", content=[f"t{i} " for i in range(20)], pace=0.2)
    streams = []
    try:
        for _ in range(CAP + 4):
            resp = requests.post(
                gateway.url + "/v1/chat/completions",
                json={
                    "model": "llama3.2",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers={"Authorization": f"Bearer {SLOW_KEY}"},
                stream=True,
                timeout=10,
            )
            assert resp.status_code == 200, resp.text
            streams.append(resp)
        # More streams than the cap are open and generating; the key may still send a body.
        extra = requests.post(
            gateway.url + "/v1/embeddings",
            json={"model": "llama3.2", "input": "hi"},
            headers={"Authorization": f"Bearer {SLOW_KEY}"},
            timeout=10,
        )
        assert extra.status_code == 200, extra.text
    finally:
        for resp in streams:
            resp.close()


def test_chunked_body_that_never_ends_gets_408(gateway):
    sock = send_head(gateway.port, "/v1/embeddings", "Transfer-Encoding: chunked")
    sock.sendall(b'5\r\n{"mod\r\n')
    status, _headers, body = response_of(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert closed_by_server(sock)
    sock.close()


def test_slow_pass_through_upload_gets_408(gateway):
    sock = send_head(gateway.port, "/v1/audio/transcriptions", "Content-Length: 5000")
    sock.sendall(b"--boundary\r\n")
    status, _headers, body = response_of(sock)
    sock.close()
    assert status == 408 and body["error"]["code"] == "request_timeout"


def test_slow_uploads_are_capped_on_the_pass_through_too(gateway):
    socks = [
        send_head(gateway.port, "/v1/audio/transcriptions", "Content-Length: 5000")
        for _ in range(CAP + 2)
    ]
    try:
        statuses = sorted(response_of(sock)[0] for sock in socks)
        assert statuses == [408] * CAP + [429] * 2
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("framing", ["Content-Length: 100", "Transfer-Encoding: chunked"])
def test_body_refused_unread_ends_the_connection(gateway, framing):
    # A wrong key is refused before the body is read; the connection must not stay open for
    # the rest of it (however slowly it comes) and then serve another request.
    sock = send_head(gateway.port, "/v1/chat/completions", framing, key="sk-not-a-real-key-99")
    try:
        sock.sendall(b'5\r\n{"mod\r\n' if "chunked" in framing else b'{"model": ')
        status, headers, body = response_of(sock)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert headers["connection"] == "close"
        rest = b"0\r\n\r\n" if "chunked" in framing else b" " * 90
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(rest + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert closed_by_server(sock)  # no second answer on this connection
    finally:
        sock.close()


@pytest.mark.parametrize("framing", ["Transfer-Encoding: chunked", f"Content-Length: {LIMIT * 4}"])
def test_pass_through_body_over_the_limit_is_413(gateway, upstream, framing):
    upstream.reset()
    sock = send_head(gateway.port, "/v1/audio/transcriptions", framing)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            data = b"x" * (LIMIT * 4)
            frames = chunked(data) if "chunked" in framing else [data]
            for frame in frames:
                sock.sendall(frame)
        status, _headers, body = response_of(sock)
    finally:
        sock.close()
    assert status == 413, body
    assert body["error"]["code"] == "request_too_large"
    # The upstream never got a whole request cut at the limit.
    assert not [r for r in upstream.requests if r.path == "/v1/audio/transcriptions"]


def test_chunked_body_cut_off_is_not_taken_for_a_whole_one(gateway, upstream):
    # The client goes away without the last chunk: nothing may reach the upstream as complete.
    upstream.reset()
    sock = send_head(gateway.port, "/v1/audio/transcriptions", "Transfer-Encoding: chunked")
    sock.sendall(b"5\r\nhello\r\n")
    sock.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError, http.client.HTTPException):
        response_of(sock)  # a 400, if the client is still there to read it
    sock.close()
    assert not [r for r in upstream.requests if r.path == "/v1/audio/transcriptions"]
