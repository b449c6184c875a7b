"""Added latency of one non-streaming chat request through Relay, against the fake Ollama direct.

Starts the fake Ollama and Relay (gunicorn, one gevent worker) on loopback, then sends the same
request alternately straight to the fake's /api/chat and through Relay's /v1/chat/completions,
one at a time, and prints the percentiles of both and of the difference. Run by hand:

    .venv/bin/python bench/latency.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-key-000001"
MESSAGES = [{"role": "user", "content": "Hi"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_relay(port: int, ollama_url: str, **env: str) -> subprocess.Popen[bytes]:
    """Start Relay under gunicorn (one gevent worker) on loopback, quietly."""
    full_env = {
        "PATH": os.environ["PATH"],
        "RELAY_ENV_FILE": "",
        "PORT": str(port),
        "OLLAMA_BASE_URL": ollama_url,
        "RELAY_API_KEYS": KEY,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    fake_port, relay_port = free_port(), free_port()
    fake = subprocess.Popen([sys.executable, "-m", "bench.fake_upstream", str(fake_port)], cwd=ROOT)
    # The reply cache is off: every request must make the whole trip to the fake.
    relay = start_relay(relay_port, f"http://127.0.0.1:{fake_port}", RELAY_CACHE_TTL="0")
    try:
        direct_url = f"http://127.0.0.1:{fake_port}/api/chat"
        relay_url = f"http://127.0.0.1:{relay_port}/v1/chat/completions"
        wait_for(f"http://127.0.0.1:{fake_port}/api/version")
        wait_for(f"http://127.0.0.1:{relay_port}/health")
        session = requests.Session()
        direct_body = {"model": "llama3.2", "messages": MESSAGES, "stream": False}
        relay_body = {"model": "llama3.2", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {KEY}"}

        def timed(url: str, body: dict[str, object], **kw: object) -> float:
            start = time.perf_counter()
            resp = session.post(url, json=body, **kw)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            assert resp.status_code == 200, resp.text
            return elapsed * 1000

        for _ in range(200):  # warm up both paths
            timed(direct_url, direct_body)
            timed(relay_url, relay_body, headers=headers)
        direct, relayed = [], []
        for _ in range(args.requests):  # alternate, so drift hits both alike
            direct.append(timed(direct_url, direct_body))
            relayed.append(timed(relay_url, relay_body, headers=headers))
    finally:
        relay.send_signal(signal.SIGQUIT)
        fake.terminate()
        relay.wait(10)
        fake.wait(10)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.requests} sequential non-streaming requests each way\n")
    print(f"{'':22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, values in (("fake Ollama direct", direct), ("through Relay", relayed)):
        print(f"{name:22}" + "".join(f"{percentile(values, q):9.2f}" for q in (0.5, 0.9, 0.99)))
    added = [r - d for r, d in zip(relayed, direct, strict=True)]
    print(
        f"\nadded by Relay: median {statistics.median(added):.2f} ms "
        f"(p50 through Relay minus p50 direct: "
        f"{percentile(relayed, 0.5) - percentile(direct, 0.5):.2f} ms)"
    )


if __name__ == "__main__":
    main()
