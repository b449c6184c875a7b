"""Added latency and first-token time through each face of Relay, against the upstream direct.

Starts the fake Ollama (bench/fake_upstream.py: 8 tokens a reply, no pacing) and Relay
(gunicorn, one gevent worker, reply cache off) on loopback, then, in rounds, sends the same
one-message chat to the fake Ollama's /api/chat directly and through each face Relay serves —
OpenAI Chat Completions (/v1/chat/completions), Anthropic Messages (/v1/messages) and Ollama's
native API (/api/chat) — whole and streamed, one request at a time. Prints p50/p90 of each and the
median added over direct. Run by hand:

    .venv/bin/python bench/faces.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import KEY, ROOT, free_port, percentile, start_relay, wait_for  # noqa: E402

MODEL = "llama3.2"
HI = [{"role": "user", "content": "Hi"}]
AUTH = {"Authorization": f"Bearer {KEY}"}
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def faces(
    relay: str, direct: str
) -> dict[str, tuple[str, Callable[[bool], dict[str, object]], dict[str, str]]]:
    """name -> (url, body for stream on/off, headers)."""
    return {
        "fake Ollama direct": (
            f"{direct}/api/chat",
            lambda s: {"model": MODEL, "messages": HI, "stream": s},
            {},
        ),
        "OpenAI chat face": (
            f"{relay}/v1/chat/completions",
            lambda s: {"model": MODEL, "messages": HI, "stream": s},
            AUTH,
        ),
        "Anthropic face": (
            f"{relay}/v1/messages",
            lambda s: {"model": MODEL, "messages": HI, "max_tokens": 64, "stream": s},
            ANTHROPIC,
        ),
        "Ollama face": (
            f"{relay}/api/chat",
            lambda s: {"model": MODEL, "messages": HI, "stream": s},
            AUTH,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    up_port, relay_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", str(up_port)], cwd=ROOT
    )
    direct = f"http://127.0.0.1:{up_port}"
    # The reply cache is off: every request makes the whole trip to the upstream.
    relay = start_relay(relay_port, direct, RELAY_CACHE_TTL="0")
    base = f"http://127.0.0.1:{relay_port}"
    session = requests.Session()
    table = faces(base, direct)
    whole: dict[str, list[float]] = {name: [] for name in table}
    first: dict[str, list[float]] = {name: [] for name in table}

    def timed(name: str) -> float:
        url, body, headers = table[name]
        start = time.perf_counter()
        resp = session.post(url, json=body(False), headers=headers)
        elapsed = time.perf_counter() - start
        assert resp.status_code == 200, (name, resp.status_code, resp.text[:200])
        return elapsed * 1000

    def first_token(name: str) -> float:
        url, body, headers = table[name]
        start, elapsed = time.perf_counter(), None
        with session.post(url, json=body(True), headers=headers, stream=True) as resp:
            assert resp.status_code == 200, (name, resp.status_code)
            for line in resp.iter_lines():
                # The first token is "tok " in every face's framing.
                if elapsed is None and b"tok " in line:
                    elapsed = time.perf_counter() - start
        assert elapsed is not None, name
        return elapsed * 1000

    try:
        wait_for(f"{direct}/api/version")
        wait_for(f"{base}/health")
        for _ in range(100):  # warm up every path
            for name in table:
                timed(name)
                first_token(name)
        for _ in range(args.requests):  # round-robin, so drift hits every path alike
            for name in table:
                whole[name].append(timed(name))
        for _ in range(max(100, args.requests // 4)):
            for name in table:
                first[name].append(first_token(name))
    finally:
        relay.send_signal(signal.SIGQUIT)
        upstream.terminate()
        relay.wait(10)
        upstream.wait(10)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.requests} whole replies and {len(first['OpenAI chat face'])} streams per path\n")
    print(
        f"{'':22}{'whole p50':>10}{'p90':>8}{'added':>8}"
        f"   {'1st token p50':>13}{'p90':>8}{'added':>8}"
    )
    base_whole = statistics.median(whole["fake Ollama direct"])
    base_first = statistics.median(first["fake Ollama direct"])
    for name in table:
        w, f = whole[name], first[name]
        print(
            f"{name:22}{percentile(w, 0.5):10.2f}{percentile(w, 0.9):8.2f}"
            f"{statistics.median(w) - base_whole:8.2f}   "
            f"{percentile(f, 0.5):13.2f}{percentile(f, 0.9):8.2f}"
            f"{statistics.median(f) - base_first:8.2f}"
        )
    print("\nms; added = median minus the direct median")


if __name__ == "__main__":
    main()
