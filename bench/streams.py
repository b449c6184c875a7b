"""Stream clients of the benchmark table: gevent raw sockets, a new connection per stream.

Each stream is one POST with `Connection: close`. Its first-token time runs from the connect to
the first bytes that carry the fake's content token (`tok `), whatever the wire format: Ollama's
NDJSON when the fake is called direct, server-sent events through a gateway. The caller has
patched gevent in (bench/compare.py), so many streams wait at once in one process.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.pool

TOKEN = b'tok "'  # the end of `"content":"tok "` in either spacing


def request_bytes(target: Any) -> bytes:
    payload = json.dumps({**target.body, "stream": True}).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
    return (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n{head}\r\n"
    ).encode() + payload


def open_stream(target: Any) -> tuple[socket.socket, float]:
    """Connect, send, and read up to the first content token: the socket and the time in ms."""
    parts = urlsplit(target.url)
    request = request_bytes(target)
    started = time.perf_counter()
    sock = socket.create_connection((parts.hostname, parts.port))
    try:
        sock.sendall(request)
        seen = sock.recv(65536)
        if not seen.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            raise RuntimeError(f"{target.name}: {seen[:200]!r}")
        while TOKEN not in seen:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"{target.name}: the stream ended before its first token")
            seen = seen[-len(TOKEN) :] + chunk
    except BaseException:
        sock.close()
        raise
    return sock, (time.perf_counter() - started) * 1000


def one_stream(target: Any) -> float:
    """A whole stream, read to its end: its first-token time in ms."""
    sock, first = open_stream(target)
    with sock:
        while sock.recv(65536):
            pass
    return first


def batches(target: Any, size: int, seconds: float, most: int = 40) -> list[float]:
    """`size` new streams at once, again and again for `seconds` (at least 3 batches, at most
    `most`): every first-token time in ms."""
    firsts: list[float] = []
    deadline = time.monotonic() + seconds
    for done in range(most):
        if done >= 3 and time.monotonic() > deadline:
            break
        greenlets = [gevent.spawn(one_stream, target) for _ in range(size)]
        gevent.joinall(greenlets, raise_error=True)
        firsts += [g.value for g in greenlets]
    return firsts


def burst(target: Any, count: int, window: float) -> list[float]:
    """`count` new streams started evenly over `window` seconds: every first-token time in ms."""
    greenlets = [gevent.spawn_later(i * window / count, one_stream, target) for i in range(count)]
    gevent.joinall(greenlets, timeout=120, raise_error=True)
    return [g.value for g in greenlets if g.successful()]


def hold(target: Any, count: int, timeout: float = 90) -> list[socket.socket]:
    """Open `count` streams, 200 opening at a time, and keep each open after its first token:
    the sockets of those that got one within `timeout` (the caller closes them)."""
    pool = gevent.pool.Pool(200)
    greenlets = [pool.spawn(open_stream, target) for _ in range(count)]
    gevent.joinall(greenlets, timeout=timeout)
    held = [g.value[0] for g in greenlets if g.successful()]
    gevent.killall([g for g in greenlets if not g.ready()], block=True, timeout=5)
    return held


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
