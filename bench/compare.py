"""The table of issue 17: the upstream direct, Relay before and after, LiteLLM, in one run.

Starts on loopback a fake Ollama (gevent, keep-alive), Relay from this checkout and, with
`--before PATH`, from a second checkout (each under gunicorn, one gevent worker, reply cache
off), and LiteLLM's proxy when it is installed (.bench/litellm). Then measures, alternating
before and after in rounds: added latency at c=1, throughput at c=1 and c=16 (wrk; again with a
worker per core), first-token time of 16 new streams at once and of 500 opened within 0.5 s
(bench/streams.py), the cache hit's added latency, and the RSS of one worker holding 2,000
streams. Prints the table (bench/table.py), writes bench/results.json and a plot. Every server
is stopped at the end, also on an error or Ctrl-C. docs/development.md "Benchmark" explains it.

    ./bench/run.sh [--before PATH] [--rounds 3] [--seconds 4]   # installs wrk and LiteLLM first
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

from bench import streams, table  # noqa: E402
from bench.servers import (  # noqa: E402
    CHAT,
    ROOT,
    Target,
    rss_mb,
    start_fake,
    start_floor,
    start_litellm,
    start_relay,
    stop_all,
    worker_pid,
    wrk,
    wrk_cpu,
)

# --- the run: every row alternates before and after ------------------------------------------


def median_of(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def in_turn(rnd: int, first: list[Target], pair: list[Target]) -> list[Target]:
    """The order of one round: `first`, then after and before (swapped every other round)."""
    return first + (pair if rnd % 2 == 0 else pair[::-1])


def first_tokens(firsts: list[float]) -> dict[str, float]:
    return {
        "p50_ms": streams.percentile(firsts, 0.5) if firsts else float("nan"),
        "p90_ms": streams.percentile(firsts, 0.9) if firsts else float("nan"),
        "streams": len(firsts),
    }


def run(args: argparse.Namespace, workdir: Path, r: dict[str, Any]) -> None:
    rounds, secs = args.rounds, args.seconds
    # One fake for rows 1-4 and 6: instant non-streaming replies, streams of 8 tokens 10 ms apart.
    upstream, fake = start_fake(tokens=8, pace=0.01)
    direct = Target("direct", upstream, "/api/chat", {**CHAT, "stream": False}, {}, fake)
    gateways = [("Relay", ROOT)] + ([("Relay before", args.before)] if args.before else [])

    def start_pair(upstream: str, **kw: Any) -> list[Target]:
        pair = []
        for name, checkout in gateways:
            target, cold = start_relay(upstream, checkout=checkout, name=name, **kw)
            r["cold_start_s"].setdefault(name, cold)  # the first start: one worker, cache off
            pair.append(target)
        return pair

    r["cold_start_s"] = {}
    pair = [*start_pair(upstream), start_floor(upstream)]
    samples: dict[str, dict[str, list]] = {"c1": {}, "c16": {}}
    firsts: dict[str, list[float]] = {}
    litellm = start_litellm(upstream, args.litellm, workdir)
    if litellm:
        # LiteLLM first and once (rows 1-3), then stopped: its load stays out of the rounds.
        print("rows 1-3: LiteLLM", flush=True)
        proxy, r["cold_start_s"]["LiteLLM"] = litellm
        wrk(proxy, 4, 1, workdir)
        for level in samples:
            samples[level]["LiteLLM"] = [wrk(proxy, int(level[1:]), secs, workdir)]
        firsts["LiteLLM"] = streams.batches(proxy, 16, secs)
        proxy.stop()
    for t in [direct, *pair]:  # warm up
        wrk(t, 4, 1, workdir)

    print("rows 1-2: non-streaming, c=1 and c=16", flush=True)
    for rnd in range(rounds):
        for level in samples:
            for t in in_turn(rnd, [direct], pair):
                sample = wrk_cpu(t, int(level[1:]), secs, workdir)
                samples[level].setdefault(t.name, []).append(sample)
    for level, by_name in samples.items():
        r[level] = {n: median_of(s) for n, s in by_name.items()}

    print("rows 3-4: new streams, 16 at a time and 500 within 0.5 s", flush=True)
    bursts: dict[str, list[float]] = {}
    gateways_only = [t for t in pair if t.name != "floor"]  # the floor app does not stream
    for rnd in range(rounds):
        for t in in_turn(rnd, [direct], gateways_only):
            firsts.setdefault(t.name, []).extend(streams.batches(t, 16, secs))
        for t in in_turn(rnd, [direct], gateways_only):
            bursts.setdefault(t.name, []).extend(streams.burst(t, 500, 0.5))
            gevent.sleep(0.5)  # let the last streams' connections close
    r["first_token_16"] = {n: first_tokens(f) for n, f in firsts.items()}
    r["burst_500"] = {n: first_tokens(f) for n, f in bursts.items()}
    for n, f in bursts.items():  # how many of each burst got a first token (mean of the rounds)
        r["burst_500"][n]["streams"] = len(f) // rounds
    for t in pair:
        t.stop()

    print("row 6: cache hits, c=1", flush=True)
    cached = [*start_pair(upstream, cache=True), start_floor(upstream, cached=True)]
    for t in cached:
        wrk(t, 4, 1, workdir)  # stores the reply, then warms up on hits
        hit = requests.post(t.url + t.path, json=t.body, headers=t.headers, timeout=10)
        if t.name != "floor" and hit.headers.get("X-Cache") != "HIT":
            print(f"  warning: {t.name} answered X-Cache {hit.headers.get('X-Cache')}")
    samples["hit"] = {}
    for rnd in range(rounds):
        for t in in_turn(rnd, [direct], cached):
            samples["hit"].setdefault(t.name, []).append(wrk(t, 1, secs, workdir))
    r["cache_hit_c1"] = {n: median_of(s) for n, s in samples["hit"].items()}
    for t in cached:
        t.stop()

    cores = os.cpu_count() or 1
    print(f"row 2, again: {cores} workers (one per core), c=16", flush=True)
    wide = start_pair(upstream, workers=cores)
    samples["wide"] = {}
    for t in wide:
        wrk(t, 16, 1, workdir)
    for rnd in range(rounds):
        for t in in_turn(rnd, [], wide):
            samples["wide"].setdefault(t.name, []).append(wrk(t, 16, secs, workdir))
    r["per_core_c16"] = {n: median_of(s) for n, s in samples["wide"].items()}
    for t in [*wide, direct]:
        t.stop()

    print(f"row 5: {args.held_streams} streams held by one worker", flush=True)
    # A token every 2 s: this measures holding many open streams, not pushing tokens.
    upstream, fake = start_fake(tokens=100, pace=2.0)
    r["held"], r["held_streams"] = {}, args.held_streams
    for name, checkout in gateways:  # one at a time, each fresh
        relay, _ = start_relay(upstream, checkout=checkout, name=name)
        socks = streams.hold(relay, args.held_streams)
        r["held"][name] = {"streams": len(socks), "rss_mb": rss_mb(worker_pid(relay))}
        r.setdefault("held_fake_rss_mb", rss_mb(fake.pid))
        for sock in socks:
            sock.close()
        relay.stop()


def describe(checkout: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return out.stdout.strip()[:72] or str(checkout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a second checkout, run as Relay before")
    parser.add_argument("--litellm", default=str(ROOT / ".bench" / "litellm" / "bin" / "litellm"))
    parser.add_argument("--seconds", type=int, default=4, help="per wrk run and stream sample")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of before and after")
    parser.add_argument("--held-streams", type=int, default=2000)
    args = parser.parse_args()
    if args.before:
        args.before = args.before.resolve()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of streams at once
    # Ctrl-C and a plain `kill` both stop the servers (`finally` below), also when started in
    # the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "./bench/run.sh " + " ".join(sys.argv[1:])
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "command": command.strip(),
        "after": describe(ROOT),
        **({"before": describe(args.before)} if args.before else {}),
        "load_average": [os.getloadavg()[0]],
    }
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    started = time.monotonic()
    try:
        run(args, workdir, results)
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average"].append(os.getloadavg()[0])
    results["table"] = table.rows(results)
    print(
        f"\n{results['command']}   ({time.monotonic() - started:.0f} s; machine "
        f"{results['machine']}; load average {results['load_average'][0]:.1f} → "
        f"{results['load_average'][1]:.1f})"
    )
    print(f"Relay after: {results['after']}")
    if args.before:
        print(f"Relay before: {results['before']}")
    print(
        f"{args.rounds} rounds x {args.seconds} s, before and after alternating; "
        "medians of the rounds (wrk), percentiles of every stream\n"
    )
    print(table.render(results))
    print(table.cpu_note(results))
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, ROOT / "bench" / "results.png")


def plot(r: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    names = list(r["c1"])
    levels = ["c1", "c16"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        xs = [x + i * width for x in range(len(levels))]
        left.bar(xs, [r[c][n]["rps"] for c in levels], width=width, label=n)
        right.bar(xs, [r[c][n]["p99_ms"] for c in levels], width=width, label=n)
    for ax, title in ((left, "requests per second"), (right, "p99 latency (ms)")):
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(levels))], ["c=1", "c=16"])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Non-streaming chat completions through each target (same machine, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every server is stopped")
