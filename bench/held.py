"""Streams opened in a burst and held, on two checkouts of Relay in one run, alternating.

Each round starts a fresh gateway per checkout (one gevent worker, reply cache off) against one
slow fake Ollama (a token a second, so every stream stays open), opens `--streams` streams
spread evenly over `--spread` seconds over raw sockets, and measures each stream's time to its
first token, the worker's CPU time spent opening them, and its RSS once all are held. Memory per
held stream is (RSS held - RSS before) / streams, on a worker warmed by a few streams first.

    git worktree add --detach /tmp/relay-before <commit>
    .venv/bin/python -m bench.held /tmp/relay-before . --streams 500 --spread 0.5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import time
from pathlib import Path

import gevent

from bench.ab import start_gateway
from bench.servers import CHAT, Target, cpu_seconds, start_fake, worker_pid
from tests.observe import rss_kib


def request(target: Target, prompt_bytes: int = 0) -> bytes:
    body: dict = {**CHAT, "stream": True}
    if prompt_bytes:  # a long conversation, as coding agents send
        body["messages"] = [{"role": "user", "content": "word " * (prompt_bytes // 5)}]
    payload = json.dumps(body).encode()
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {target.headers['Authorization']}\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload


def burst(
    target: Target, count: int, spread: float, prompt_bytes: int = 0
) -> tuple[list[float], list[socket.socket]]:
    """Open `count` streams over `spread` seconds; the first-token times and the open sockets."""
    port = int(target.url.rsplit(":", 1)[1])
    raw = request(target, prompt_bytes)
    firsts: list[float] = []
    held: list[socket.socket] = []
    failures: list[bytes] = []

    def one(delay: float) -> None:
        gevent.sleep(delay)
        s = socket.create_connection(("127.0.0.1", port))
        held.append(s)
        started = time.perf_counter()
        s.sendall(raw)
        data = b""
        while b"tok" not in data:
            chunk = s.recv(65536)
            if not chunk:
                failures.append(data[:300])
                return
            data += chunk
        firsts.append(time.perf_counter() - started)

    greenlets = [gevent.spawn(one, spread * i / count) for i in range(count)]
    gevent.joinall(greenlets, timeout=120)
    if failures:
        print(f"{len(failures)} streams failed to start, the first: {failures[0]!r}")
    return firsts, held


def measure(target: Target, count: int, spread: float, prompt_bytes: int) -> dict[str, float]:
    pid = worker_pid(target)
    firsts, held = burst(target, 8, 0.0, prompt_bytes)  # warm the worker: lazy imports, pools
    for s in held:
        s.close()
    gevent.sleep(1.5)
    rss, cpu = rss_kib(pid), cpu_seconds(pid)
    firsts, held = burst(target, count, spread, prompt_bytes)
    used = cpu_seconds(pid) - cpu
    gevent.sleep(1.0)  # every stream is held now, past its first token
    held_kib = rss_kib(pid)
    grown = held_kib - rss
    for s in held:
        s.close()
    firsts.sort()
    return {
        "started": len(firsts),
        "ttft_p50_ms": statistics.median(firsts) * 1000 if firsts else float("nan"),
        "ttft_p90_ms": firsts[int(len(firsts) * 0.9)] * 1000 if firsts else float("nan"),
        "open_cpu_us": used / count * 1e6,
        "kib_per_stream": grown / max(1, len(firsts)),
        "rss_held_mib": held_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-bytes", type=int, default=0, help="a longer request body")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    upstream, fake = start_fake(tokens=120, pace=1.0)
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    try:
        for rnd in range(args.rounds):
            order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
            for name in order:
                target = start_gateway(checkouts[name], upstream, name, {})
                try:
                    results[name].append(
                        measure(target, args.streams, args.spread, args.prompt_bytes)
                    )
                finally:
                    target.stop()
                print(name, results[name][-1], flush=True)
    finally:
        os.killpg(fake.pid, 15)
    print(f"\n{args.streams} streams over {args.spread} s, median of {args.rounds} rounds")
    print(f"{'':18}{'before':>10}{'after':>10}{'ratio':>7}")
    for field in (
        "started",
        "ttft_p50_ms",
        "ttft_p90_ms",
        "open_cpu_us",
        "kib_per_stream",
        "rss_held_mib",
    ):
        a, b = (statistics.median(r[field] for r in results[t]) for t in ("before", "after"))
        print(f"{field:18}{a:10.1f}{b:10.1f}{b / a if a else float('nan'):7.2f}")


if __name__ == "__main__":
    main()
