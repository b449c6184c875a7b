"""Bare-socket streaming clients that read, stall or vanish on cue; shared by the fault suite
and bench/soak.py."""

from __future__ import annotations

import json
import random
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import API_KEY, Gateway, wait_until
from tests.fakes.ollama_faults import AnyModelOllama
from tests.observe import client_sockets, upstream_sockets

USER = [{"role": "user", "content": "Hi"}]


def events(raw: str) -> list[str]:
    """The SSE events of a body, keep-alive comments left out."""
    return [e for e in raw.split("\n\n") if e and not e.startswith(":")]


def last_data(raw: str) -> str:
    return events(raw)[-1].rsplit("data: ", 1)[1]


def finished_cleanly(results: list[str]) -> int:
    """Check every body a client read to the end: a complete stream or a clean error frame."""
    finished = [r for r in results if r != "vanished"]
    for body in finished:
        if body.startswith("{"):  # an HTTP error before the stream began, e.g. a 503
            assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
            continue
        last = last_data(body)
        assert last == "[DONE]" or set(json.loads(last)) == {"error"}, body[-300:]
    return len(finished)


def open_raw(gw: Gateway, model: str, rcvbuf: int | None = None) -> socket.socket:
    """Send a streamed chat request over a bare socket, so the test controls reading."""
    data = json.dumps({"model": model, "messages": USER, "stream": True}).encode()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", gw.port))
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        if not chunk:
            sock.close()
            raise AssertionError(f"the stream ended before {marker!r}: {got[-200:]!r}")
        got += chunk
    return got


def read_body(sock: socket.socket, raw: bytes = b"") -> str:
    """Read to the end (after what was read already); return the body, de-chunked."""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return rest.decode()
    body = b""
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        body, rest = body + rest[:n], rest[n + 2 :]
    return body.decode()


def vanish(sock: socket.socket) -> None:
    """Go away abruptly: close with a reset, as a killed client or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def storm(gw: Gateway, n: int, seed: int) -> list[str]:
    """Run n streams at once; about half the clients vanish at a random moment."""
    rng = random.Random(seed)
    plans = [rng.choice(["read", "read", "vanish-early", "vanish-late"]) for _ in range(n)]

    def client(plan: str) -> str:
        sock = open_raw(gw, "llama3.2")
        if plan == "read":
            return read_body(sock)
        if plan == "vanish-late":
            read_until(sock, b"data: ")
        vanish(sock)
        return "vanished"

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(client, plans))


def quiet(gw: Gateway, fake: AnyModelOllama, pid: int) -> None:
    """Wait until nothing of the last storm is left: replies, upstream and client sockets."""
    wait_until(lambda: fake.running == 0 and fake.open_connections == 0, timeout=15)
    wait_until(lambda: upstream_sockets(pid, fake._server.port) == 0, timeout=15)
    wait_until(lambda: client_sockets(pid, gw.port) == 0, timeout=15)
