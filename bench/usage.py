"""What the usage ledger costs: added latency on the hot path, and records written per second.

1. Latency: starts the fake Ollama and Relay (gunicorn, one gevent worker) with RELAY_USAGE off,
   with it on into an SQLite file and, when PostgreSQL is installed (Debian's `postgresql`),
   with it on into a private PostgreSQL cluster (tests/postgres.py); then sends the same
   non-streaming chat request to each in turn, one at a time, so drift hits all alike, and
   prints the percentiles and the median added by the ledger (on minus off, pair by pair).
2. The request's own part, in one process: `Ledger.submit` (queue one record; the writer thread
   writing into SQLite meanwhile), timed call by call. The whole-request numbers above carry
   the noise of three processes; this one does not.
3. Throughput: writes records in the ledger's own batches (services/usage/ledger.py BATCH) into
   a new SQLite file and a new PostgreSQL database from this process for a few seconds each, and
   prints the sustained records per second.

Run by hand:

    .venv/bin/python bench/usage.py [--requests 2000] [--seconds 5] [--no-postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from loguru import logger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.latency import KEY, MESSAGES, free_port, percentile, start_relay, wait_for  # noqa: E402
from services.usage.ledger import BATCH, Ledger  # noqa: E402
from services.usage.record import UsageRecord  # noqa: E402
from services.usage.store import UsageStore  # noqa: E402


def record(i: int) -> UsageRecord:
    return UsageRecord(
        ts=datetime.now(UTC).replace(tzinfo=None),
        request_id=f"req_bench_{i}",
        key_name=f"team-{i % 20}",
        model=("llama3.2", "qwen2.5", "nomic-embed-text")[i % 3],
        backend="ollama",
        upstream_model="llama3.2",
        endpoint="/v1/chat/completions",
        method="POST",
        status=200 if i % 50 else 502,
        error_type=None if i % 50 else "server_error",
        error_code=None if i % 50 else "bad_gateway",
        prompt_tokens=120,
        completion_tokens=48,
        reasoning_tokens=None,
        cached_tokens=None,
        tokens_estimated=False,
        cache="MISS",
        duration_ms=812.5,
        first_token_ms=95.0 if i % 2 else None,
        streamed=bool(i % 2),
        abandoned=False,
        client="10.0.0.7",
    )


def throughput(url: str, seconds: float) -> float:
    """Records per second written in the ledger's batches, each batch one transaction."""
    store = UsageStore.open(url)
    store.migrate()
    written, i = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = [record(i + n) for n in range(BATCH)]
        store.write(batch)
        written += len(batch)
        i += BATCH
    elapsed = time.perf_counter() - start
    store.engine.dispose()
    return written / elapsed


class _Count:
    def inc(self, amount: float = 1) -> None:
        pass

    def labels(self, *values: str) -> _Count:
        return self


def submit_cost(url: str, calls: int) -> list[float]:
    """Microseconds per `Ledger.submit`, with the writer writing what is queued meanwhile."""
    store = UsageStore.open(url)
    store.migrate()
    ledger = Ledger(
        store,
        queue_size=calls + 1,
        flush_seconds=0.05,
        retention_days=90,
        daily_retention_days=0,
        dropped=_Count(),
        written=_Count(),
    )
    records = [record(i) for i in range(calls)]
    costs = []
    for i, r in enumerate(records):
        start = time.perf_counter()
        ledger.submit(r)
        costs.append((time.perf_counter() - start) * 1e6)
        if i % 100 == 99:
            time.sleep(0.01)  # requests arrive over time: the writer writes among them
    flushed = calls - ledger._queue.qsize()
    ledger.close()
    assert flushed > 0, "the writer did not write while records were queued"
    store.engine.dispose()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    logger.remove()  # the ledger's own log lines (its exit flush) are not results

    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-usage-"))
    cluster = None
    if not args.no_postgres:
        from tests.postgres import PostgresCluster

        cluster = PostgresCluster()
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", str(up_port)], cwd=ROOT
    )
    ollama = f"http://127.0.0.1:{up_port}"
    # Each gateway: the reply cache off (every request makes the whole trip), one worker.
    variants = {
        "usage off": {"RELAY_USAGE": "off"},
        "usage on, SQLite": {"RELAY_DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}"},
    }
    if cluster is not None:
        variants["usage on, PostgreSQL"] = {"RELAY_DATABASE_URL": cluster.new_database()}
    relays: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    times: dict[str, list[float]] = {name: [] for name in variants}
    rates: dict[str, float] = {}
    try:
        for name, env in variants.items():
            port = free_port()
            relays[name] = (
                start_relay(port, ollama, RELAY_CACHE_TTL="0", **env),
                f"http://127.0.0.1:{port}",
            )
        wait_for(ollama + "/api/version")
        for _proc, base in relays.values():
            wait_for(base + "/health")
        session = requests.Session()
        body = {"model": "llama3.2", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {KEY}"}

        def timed(base: str) -> float:
            start = time.perf_counter()
            resp = session.post(base + "/v1/chat/completions", json=body, headers=headers)
            elapsed = time.perf_counter() - start
            assert resp.status_code == 200, resp.text
            return elapsed * 1000

        for _ in range(200):  # warm up every path
            for _proc, base in relays.values():
                timed(base)
        for _ in range(args.requests):  # in turn, so drift hits all alike
            for name, (_proc, base) in relays.items():
                times[name].append(timed(base))
    finally:
        for proc, _base in relays.values():
            proc.send_signal(signal.SIGQUIT)
        for proc, _base in relays.values():
            proc.wait(10)
        upstream.terminate()
        upstream.wait(10)
    submits = submit_cost(f"sqlite:///{workdir / 'submit.db'}", 20_000)
    try:
        rates["SQLite"] = throughput(f"sqlite:///{workdir / 'throughput.db'}", args.seconds)
        if cluster is not None:
            rates["PostgreSQL"] = throughput(cluster.new_database(), args.seconds)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.requests} sequential non-streaming chat requests to each gateway, in turn\n")
    print(f"{'':24}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for name, values in times.items():
        print(f"{name:24}" + "".join(f"{percentile(values, q):9.3f}" for q in (0.5, 0.9, 0.99)))
    off = times["usage off"]
    print()
    for name, values in times.items():
        if name == "usage off":
            continue
        added = [on - o for on, o in zip(values, off, strict=True)]
        print(
            f"added by the ledger ({name.removeprefix('usage on, ')}): median of pairs"
            f" {statistics.median(added):+.3f} ms, p50 on minus p50 off"
            f" {percentile(values, 0.5) - percentile(off, 0.5):+.3f} ms"
        )
    print(
        f"\nLedger.submit in one process ({len(submits)} calls, the writer busy meanwhile):"
        f" p50 {percentile(submits, 0.5):.1f} µs, p99 {percentile(submits, 0.99):.1f} µs"
    )
    print(f"\nsustained writes, batches of {BATCH} records, one transaction each:")
    for name, rate in rates.items():
        print(f"  {name:12}{rate:10,.0f} records/s")


if __name__ == "__main__":
    main()
