"""Added latency of one non-streaming chat request through Relay, against the upstream direct.

Starts the upstream and Relay (gunicorn, one gevent worker) on loopback, then sends the same
request alternately straight to the upstream and through Relay's /v1/chat/completions, one at a
time, and prints the percentiles of both and of the difference. The upstream is the fake Ollama
(its /api/chat), or with `--upstream llama` llama.cpp's real OpenAI-compatible server
(llama-cpp-python) running the tests' tiny model (tests/real/tiny_model.py: 26 tokens a reply);
then time to the first streamed token is measured too. Run by hand:

    .venv/bin/python bench/latency.py [--requests 2000] [--upstream llama]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def start_relay(port: int, ollama_url: str = "", **env: str) -> subprocess.Popen[bytes]:
    """Start Relay under gunicorn (one gevent worker) on loopback, quietly."""
    full_env = {
        "PATH": os.environ["PATH"],
        "RELAY_ENV_FILE": "",
        "PORT": str(port),
        "RELAY_API_KEYS": KEY,
        **({"OLLAMA_BASE_URL": ollama_url} if ollama_url else {}),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Upstream:
    """An upstream on loopback: the process, the direct request, and Relay's env for it."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.port = free_port()
        base = f"http://127.0.0.1:{self.port}"
        if kind == "llama":
            sys.path.insert(0, str(ROOT))
            from tests.real.tiny_model import write_model

            model = write_model(workdir / "tiny.gguf")
            config = {
                "host": "127.0.0.1",
                "port": self.port,
                "interrupt_requests": False,
                "models": [
                    {
                        "model": str(model),
                        "model_alias": "tiny",
                        "n_ctx": 2048,
                        "n_threads": 1,
                        "n_threads_batch": 1,
                        "verbose": False,
                    }
                ],
            }
            (workdir / "llama.json").write_text(json.dumps(config))
            cmd = [sys.executable, "-m", "llama_cpp.server", "--config_file", "llama.json"]
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.ready, self.name = base + "/v1/models", "llama.cpp direct"
            self.url = base + "/v1/chat/completions"
            self.model, self.body_extra = "tiny", {"temperature": 0}
            relay_toml = workdir / "relay.toml"
            relay_toml.write_text(f'[backends.llama]\ntype = "openai"\nurl = "{base}/v1"\n')
            self.relay_env = {"RELAY_CONFIG": str(relay_toml)}
        else:
            cmd = [sys.executable, "-m", "bench.fake_upstream", str(self.port)]
            self.proc = subprocess.Popen(cmd, cwd=ROOT)
            self.ready, self.name = base + "/api/version", "fake Ollama direct"
            self.url, self.model, self.body_extra = base + "/api/chat", "llama3.2", {}
            self.relay_env = {"OLLAMA_BASE_URL": base}
        self.kind = kind

    def direct_body(self, stream: bool) -> dict[str, object]:
        return {"model": self.model, "messages": MESSAGES, "stream": stream, **self.body_extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--upstream", choices=["fake-ollama", "llama"], default="fake-ollama")
    args = parser.parse_args()

    relay_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    up = Upstream(args.upstream, workdir)
    # The reply cache is off: every request must make the whole trip to the upstream.
    relay = start_relay(relay_port, RELAY_CACHE_TTL="0", **up.relay_env)
    first: dict[str, list[float]] = {"direct": [], "relay": []}
    try:
        relay_url = f"http://127.0.0.1:{relay_port}/v1/chat/completions"
        wait_for(up.ready)
        wait_for(f"http://127.0.0.1:{relay_port}/health")
        session = requests.Session()
        direct_body = up.direct_body(False)
        relay_body = {**direct_body}
        headers = {"Authorization": f"Bearer {KEY}"}

        def timed(url: str, body: dict[str, object], **kw: object) -> float:
            start = time.perf_counter()
            resp = session.post(url, json=body, **kw)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            assert resp.status_code == 200, resp.text
            return elapsed * 1000

        def first_token(url: str, **kw: object) -> float:
            start = time.perf_counter()
            body = up.direct_body(True)
            with session.post(url, json=body, stream=True, **kw) as resp:  # type: ignore[arg-type]
                lines = resp.iter_lines()
                for line in lines:  # the first token is `a`, in either server's spacing
                    if b'"content": "a"' in line or b'"content":"a"' in line:
                        elapsed = time.perf_counter() - start
                        break
                for _ in lines:  # read the stream to its end before the next request
                    pass
            return elapsed * 1000

        for _ in range(200):  # warm up both paths
            timed(up.url, direct_body)
            timed(relay_url, relay_body, headers=headers)
        direct, relayed = [], []
        for _ in range(args.requests):  # alternate, so drift hits both alike
            direct.append(timed(up.url, direct_body))
            relayed.append(timed(relay_url, relay_body, headers=headers))
        if up.kind == "llama":
            streams: list[tuple[str, str, Callable[[], float]]] = [
                ("direct", up.url, lambda: first_token(up.url)),
                ("relay", relay_url, lambda: first_token(relay_url, headers=headers)),
            ]
            for _ in range(max(50, args.requests // 4)):
                for name, _url, measure in streams:
                    first[name].append(measure())
    finally:
        relay.send_signal(signal.SIGQUIT)
        up.proc.terminate()
        relay.wait(10)
        up.proc.wait(10)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.requests} sequential non-streaming requests each way\n")
    print(f"{'':22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, values in ((up.name, direct), ("through Relay", relayed)):
        print(f"{name:22}" + "".join(f"{percentile(values, q):9.2f}" for q in (0.5, 0.9, 0.99)))
    added = [r - d for r, d in zip(relayed, direct, strict=True)]
    print(
        f"\nadded by Relay: median {statistics.median(added):.2f} ms "
        f"(p50 through Relay minus p50 direct: "
        f"{percentile(relayed, 0.5) - percentile(direct, 0.5):.2f} ms)"
    )
    if first["direct"]:
        print(f"\ntime to first token, {len(first['direct'])} streams each way")
        for name, values in ((up.name, first["direct"]), ("through Relay", first["relay"])):
            row = "".join(f"{percentile(values, q):9.2f}" for q in (0.5, 0.9, 0.99))
            print(f"{name:22}" + row)


if __name__ == "__main__":
    main()
