"""Relay against the upstream called directly and against LiteLLM's proxy, in one run.

Starts a fake Ollama (gevent, keep-alive), Relay (gunicorn, one gevent worker) and, when it is
installed, LiteLLM's proxy (one worker) on loopback, then measures on the same workloads:
non-streaming latency and throughput at concurrency 1, 16 and 64 (wrk), time to first token and
the gap between chunks for streams, how many concurrent streams one Relay worker holds and its
memory, and cold start. Prints a table with ratios, writes bench/results.json and a plot.

    ./bench/run.sh            # creates the benchmark environments, then runs this
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-key-000001"
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not come up in {timeout}s")


class Target:
    """One server under test: how to reach it and how to ask it for a chat reply."""

    def __init__(
        self,
        name: str,
        url: str,
        path: str,
        body: dict,
        headers: dict,
        proc: subprocess.Popen | None = None,
    ) -> None:
        self.name, self.url, self.path, self.body, self.headers = name, url, path, body, headers
        self.proc = proc

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_fake(tokens: int, pace: float) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = start(
        [
            sys.executable,
            "-m",
            "bench.fake_upstream",
            str(port),
            "--tokens",
            str(tokens),
            "--pace",
            str(pace),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/api/version")
    return url, proc


def start_relay(upstream: str, cache: bool = False) -> tuple[Target, float]:
    port = free_port()
    # The reply cache is off unless measured on purpose: every request makes the whole trip.
    env = {
        "RELAY_ENV_FILE": "",
        "PORT": str(port),
        "OLLAMA_BASE_URL": upstream,
        "RELAY_API_KEYS": KEY,
        "LOG_LEVEL": "warn",
        "RELAY_WORKER_CONNECTIONS": "4000",
        "RELAY_CACHE_TTL": "300" if cache else "0",
        # Every gateway gets the same body (no temperature), which only `all` caches.
        "RELAY_CACHE_MODE": "all",
    }
    proc = start([sys.executable, "-m", "gunicorn", "wsgi:app"], env)
    url = f"http://127.0.0.1:{port}"
    cold = wait_for(url + "/health")
    headers = {"Authorization": f"Bearer {KEY}"}
    return Target("Relay", url, "/v1/chat/completions", CHAT, headers, proc), cold


def start_litellm(upstream: str, litellm: str, workdir: Path) -> tuple[Target, float] | None:
    if not litellm or not Path(litellm).exists():
        return None
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: llama3.2\n    litellm_params:\n"
        f"      model: ollama_chat/llama3.2\n      api_base: {upstream}\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    # No network here: use the bundled model cost map and no telemetry.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    proc = start(
        [litellm, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    cold = wait_for(url + "/health/liveliness", timeout=120)
    headers = {"Authorization": f"Bearer {KEY}"}
    return Target("LiteLLM", url, "/v1/chat/completions", CHAT, headers, proc), cold


# --- non-streaming: wrk ---------------------------------------------------------------------


def wrk(target: Target, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"{target.name}.lua"
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in target.headers.items())
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(target.body))}\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{headers}'
    )
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            target.url + target.path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{target.name}: {errors.group(1)} failed requests\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"p50_ms": ms("50%"), "p99_ms": ms("99%"), "rps": rps}


# --- streams: a gevent client ------------------------------------------------------------------


def stream_timings(target: Target, count: int, concurrency: int) -> dict[str, float]:
    """Time to first token and gaps between chunks over `count` streams."""
    firsts: list[float] = []
    gaps: list[float] = []
    body = {**target.body, "stream": True}
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))

    def one() -> None:
        started = time.perf_counter()
        with session.post(
            target.url + target.path, json=body, headers=target.headers, stream=True
        ) as resp:
            last = None
            for line in resp.iter_lines():
                if not line or (target.name != "direct" and b"content" not in line):
                    continue
                now = time.perf_counter()
                if last is None:
                    firsts.append(now - started)
                else:
                    gaps.append(now - last)
                last = now

    pool = gevent.pool.Pool(concurrency)
    for _ in range(count):
        pool.spawn(one)
    pool.join()
    return {
        "ttft_ms": statistics.median(firsts) * 1000,
        "gap_p50_ms": statistics.median(gaps) * 1000,
        "gap_p99_ms": sorted(gaps)[int(len(gaps) * 0.99)] * 1000,
    }


def held_streams(target: Target, count: int) -> dict[str, float]:
    """Open `count` slow streams at once; report how many got their first token and the RSS."""
    first = gevent.lock.Semaphore(0)
    got: list[int] = []
    body = {**target.body, "stream": True}

    def one() -> None:
        s = socket.create_connection(("127.0.0.1", int(target.url.rsplit(":", 1)[1])))
        payload = json.dumps(body).encode()
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {target.headers['Authorization']}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        s.sendall(head + payload)
        data = b""
        while b"content" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        got.append(1)
        first.release()
        gevent.sleep(60)  # hold the stream open
        s.close()

    greenlets = [gevent.spawn(one) for _ in range(count)]
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        gevent.sleep(0.2)
    rss = worker_rss_mb(target)
    gevent.killall(greenlets, block=False)
    return {"streams": len(got), "rss_mb": rss}


def worker_rss_mb(target: Target) -> float:
    """RSS of the target's serving process (gunicorn's worker: the master's child)."""
    assert target.proc is not None
    pids = subprocess.run(
        ["pgrep", "-P", str(target.proc.pid)], capture_output=True, text=True
    ).stdout.split() or [str(target.proc.pid)]
    status = Path(f"/proc/{pids[0]}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm", default=str(ROOT / ".bench" / "litellm" / "bin" / "litellm"))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--held-streams", type=int, default=2000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    results: dict[str, dict] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        }
    }
    started: list[Target] = []
    try:
        # 1. Non-streaming, instant upstream.
        upstream, fake = start_fake(tokens=8, pace=0.0)
        direct = Target("direct", upstream, "/api/chat", {**CHAT, "stream": False}, {}, fake)
        relay, relay_cold = start_relay(upstream)
        litellm = start_litellm(upstream, args.litellm, workdir)
        started += [direct, relay] + ([litellm[0]] if litellm else [])
        targets = [direct, relay] + ([litellm[0]] if litellm else [])
        results["cold_start_s"] = {
            "Relay": relay_cold,
            **({"LiteLLM": litellm[1]} if litellm else {}),
        }
        for t in targets:  # warm up
            wrk(t, 4, 2, workdir)
        for c in (1, 16, 64):
            results[f"c{c}"] = {t.name: wrk(t, c, args.seconds, workdir) for t in targets}
        for t in targets[1:]:
            t.stop()
        # Cache hits: the same request again and again, answered from Relay's reply cache.
        cached, _ = start_relay(upstream, cache=True)
        started.append(cached)
        wrk(cached, 4, 2, workdir)
        results["cache_hit_c16"] = wrk(cached, 16, args.seconds, workdir)
        cached.stop()
        fake.terminate()
        # 2. Streams at a realistic token pace: 40 tokens, 20 ms apart.
        upstream, fake = start_fake(tokens=40, pace=0.02)
        direct = Target("direct", upstream, "/api/chat", {**CHAT, "stream": True}, {}, fake)
        relay, _ = start_relay(upstream)
        litellm = start_litellm(upstream, args.litellm, workdir)
        started += [direct, relay] + ([litellm[0]] if litellm else [])
        targets = [direct, relay] + ([litellm[0]] if litellm else [])
        results["streams"] = {t.name: stream_timings(t, 200, 16) for t in targets}
        # 3. Many slow streams held by one Relay worker.
        for t in targets[1:]:
            t.stop()
        fake.terminate()
        # A token every 2 s: this measures holding many open streams, not pushing tokens.
        upstream, fake = start_fake(tokens=100, pace=2.0)
        relay, _ = start_relay(upstream)
        started += [Target("fake", upstream, "", {}, {}, fake), relay]
        results["held"] = held_streams(relay, args.held_streams)
    finally:
        for t in started:
            t.stop()
    report(results)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, ROOT / "bench" / "results.png")


def report(r: dict) -> None:
    names = [n for n in ("direct", "Relay", "LiteLLM") if n in r["c1"]]
    print(f"\nmachine: {r['machine']}\n")
    print(f"{'non-streaming':16}" + "".join(f"{n:>26}" for n in names))
    for c in ("c1", "c16", "c64"):
        row = "".join(
            f"{r[c][n]['p50_ms']:8.2f}/{r[c][n]['p99_ms']:7.2f} ms {r[c][n]['rps']:6.0f}/s"
            for n in names
        )
        print(f"concurrency {c[1:]:4}{row}")
    d, x = r["c16"]["direct"], r["c16"]["Relay"]
    print(
        f"\nadded by Relay at concurrency 16: p50 {x['p50_ms'] - d['p50_ms']:.2f} ms, "
        f"p99 {x['p99_ms'] - d['p99_ms']:.2f} ms"
    )
    if "LiteLLM" in names:
        for c in ("c1", "c16", "c64"):
            print(
                f"throughput Relay / LiteLLM at {c[1:]:>2}: "
                f"{r[c]['Relay']['rps'] / r[c]['LiteLLM']['rps']:.1f}x"
            )
    print("\nstreams (40 tokens, 20 ms apart, 16 at a time): TTFT, chunk gap p50/p99")
    for n, s in r["streams"].items():
        print(
            f"  {n:8} {s['ttft_ms']:7.2f} ms   {s['gap_p50_ms']:6.2f} / {s['gap_p99_ms']:6.2f} ms"
        )
    hit = r["cache_hit_c16"]
    print(
        f"\ncache hits at concurrency 16: p50 {hit['p50_ms']:.2f} ms, {hit['rps']:.0f}/s "
        f"({hit['rps'] / r['c16']['Relay']['rps']:.1f}x a miss)"
    )
    print(
        f"one Relay worker held {r['held']['streams']} concurrent streams in "
        f"{r['held']['rss_mb']:.0f} MB RSS"
    )
    print("cold start: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["cold_start_s"].items()))


def plot(r: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    names = [n for n in ("direct", "Relay", "LiteLLM") if n in r["c1"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(3)
    for i, n in enumerate(names):
        left.bar(
            [x + i * 0.25 for x in xs],
            [r[c][n]["rps"] for c in ("c1", "c16", "c64")],
            width=0.25,
            label=n,
        )
        right.bar(
            [x + i * 0.25 for x in xs],
            [r[c][n]["p99_ms"] for c in ("c1", "c16", "c64")],
            width=0.25,
            label=n,
        )
    for ax, title in ((left, "requests per second"), (right, "p99 latency (ms)")):
        ax.set_xticks([x + 0.25 for x in xs], ["c=1", "c=16", "c=64"])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Non-streaming chat completions through each target (same machine, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
