"""The servers a benchmark runs and how it measures them: the fake Ollama, Relay from a
checkout, the stack-floor app, LiteLLM's proxy; wrk, and a gunicorn worker's CPU time and RSS.
Every server started here is stopped by stop_all(). Used by bench/compare.py, ab.py, held.py and
profile.py.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

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
                self.proc.wait()


RUNNING: list[subprocess.Popen] = []  # every server started, for stop_all()


def start(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: Ctrl-C reaches only this script
    )
    RUNNING.append(proc)
    return proc


def stop_all() -> None:
    """Stop every server this process started, also those that never came up."""
    for proc in reversed(RUNNING):
        Target("", "", "", {}, {}, proc).stop()
    RUNNING.clear()


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


def start_relay(
    upstream: str,
    cache: bool = False,
    checkout: Path = ROOT,
    name: str = "Relay",
    workers: int = 1,
    extra: dict[str, str] | None = None,
) -> tuple[Target, float]:
    """Relay from `checkout` (its own .venv's python if it has one) under gunicorn."""
    port = free_port()
    # The reply cache is off unless measured on purpose: every request makes the whole trip.
    env = {
        "RELAY_ENV_FILE": "",
        "PORT": str(port),
        "OLLAMA_BASE_URL": upstream,
        "RELAY_API_KEYS": KEY,
        "LOG_LEVEL": "warn",
        "RELAY_WORKERS": str(workers),
        "RELAY_WORKER_CONNECTIONS": "4000",
        # No per-key caps either: 2,000 streams of one key, 500 of them opening at once.
        "RELAY_MAX_REQUESTS_PER_KEY": "4000",
        "RELAY_MAX_UPLOADS_PER_KEY": "4000",
        "RELAY_CACHE_TTL": "300" if cache else "0",
        # Every gateway gets the same body (no temperature), which only `all` caches.
        "RELAY_CACHE_MODE": "all",
        **(extra or {}),
    }
    python = checkout / ".venv" / "bin" / "python"
    cmd = [str(python) if python.exists() else sys.executable, "-m", "gunicorn", "wsgi:app"]
    proc = start(cmd, env, cwd=checkout)
    url = f"http://127.0.0.1:{port}"
    cold = wait_for(url + "/health")
    headers = {"Authorization": f"Bearer {KEY}"}
    return Target(name, url, "/v1/chat/completions", CHAT, headers, proc), cold


def start_floor(upstream: str, cached: bool = False) -> Target:
    """bench/floor_app.py under the same gunicorn gevent worker as Relay, one worker."""
    port = free_port()
    env = {"FLOOR_UPSTREAM": upstream, "FLOOR_CACHED": "1" if cached else "0"}
    cmd = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections"]
    cmd += ["4000", "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "floor_app:app"]
    proc = start(cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health")
    return Target("floor", url, "/v1/chat/completions", CHAT, {}, proc)


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
    script = workdir / f"{target.name.replace(' ', '-')}.lua"
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


def wrk_cpu(target: Target, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    """wrk, and for a server under gunicorn its worker's CPU time per request: the figure a busy
    machine disturbs least."""
    if target.name in ("direct", "LiteLLM"):
        return wrk(target, connections, seconds, workdir)
    pid = worker_pid(target)
    used = cpu_seconds(pid)
    result = wrk(target, connections, seconds, workdir)
    used = cpu_seconds(pid) - used
    result["cpu_us"] = used / max(1.0, result["rps"] * seconds) * 1e6
    return result


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(target: Target) -> int:
    """The pid of gunicorn's worker (the master's only child with one worker)."""
    assert target.proc is not None
    master = target.proc.pid
    return int(Path(f"/proc/{master}/task/{master}/children").read_text().split()[0])


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
