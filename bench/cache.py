"""Reply-cache hit against miss: latency one at a time, and throughput with concurrent clients.

Starts a fake Ollama (in this process, optionally answering after --upstream-ms) and Relay
(gunicorn, one gevent worker, in-process cache) on loopback. A miss sends a prompt never seen
before, so it goes upstream; a hit repeats one prompt, so it is answered from the cache.
Run by hand:

    .venv/bin/python bench/cache.py [--requests 2000] [--clients 8] [--upstream-ms 0]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import KEY, free_port, percentile, start_relay, wait_for  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402

URL_PATH = "/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--upstream-ms", type=float, default=0.0)
    args = parser.parse_args()

    fake = FakeOllama(record=False)
    fake.script("llama3.2", headers_delay=args.upstream_ms / 1000)
    relay_port = free_port()
    relay = start_relay(
        relay_port,
        fake.url,
        RELAY_CACHE_TTL="3600",
        RELAY_CACHE_MAX_ENTRIES=str(10 * args.requests + 1000),
        LOG_LEVEL="warn",
    )
    url = f"http://127.0.0.1:{relay_port}{URL_PATH}"
    counter = itertools.count()
    local = threading.local()

    def send(hit: bool, check: bool = True) -> float:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        text = "the same question" if hit else f"question {next(counter)}"
        # temperature 0: by default only deterministic requests are cached
        body = {
            "model": "llama3.2",
            "temperature": 0,
            "messages": [{"role": "user", "content": text}],
        }
        start = time.perf_counter()
        resp = session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
        elapsed = (time.perf_counter() - start) * 1000
        assert resp.status_code == 200, resp.text
        if check:
            assert resp.headers["X-Cache"] == ("HIT" if hit else "MISS"), resp.headers["X-Cache"]
        return elapsed

    def throughput(hit: bool) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda _: send(hit), range(args.requests)))
        return args.requests / (time.perf_counter() - start)

    try:
        wait_for(f"http://127.0.0.1:{relay_port}/health")
        send(True, check=False)  # stores the reply every hit then gets
        for _ in range(200):  # warm up both paths
            send(True)
            send(False)
        misses, hits = [], []
        for _ in range(args.requests):  # alternate, so drift hits both alike
            misses.append(send(False))
            hits.append(send(True))
        miss_rps, hit_rps = throughput(False), throughput(True)
    finally:
        relay.send_signal(signal.SIGQUIT)
        relay.wait(10)
        fake.close()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"{args.requests} sequential requests each way; throughput with {args.clients} clients; "
        f"upstream answers after {args.upstream_ms:g} ms\n"
    )
    print(f"{'':8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, values, rps in (("miss", misses, miss_rps), ("hit", hits, hit_rps)):
        cells = "".join(f"{percentile(values, q):9.2f}" for q in (0.5, 0.9, 0.99))
        print(f"{name:8}{cells}{rps:9.0f}")


if __name__ == "__main__":
    main()
