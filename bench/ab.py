"""Two checkouts of Relay side by side in one run, alternating, against one fake Ollama.

On a shared machine a number from one run means little next to a number from another: this
starts both gateways (one gevent worker each, reply cache off, no limits) on the same fake
upstream and runs each workload on A, then B, then A... so both see the same noise. It prints
the median of each and the ratio B/A.

    git worktree add --detach /tmp/relay-before <commit>    # the "before" checkout
    .venv/bin/python -m bench.ab /tmp/relay-before . --rounds 5

Workloads: non-streaming chat at concurrency 1 and 16 and a streamed chat (8 tokens, no pace)
at concurrency 16, each `--seconds` long with wrk, keep-alive connections.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.servers import CHAT, Target, start_fake, start_relay, wrk, wrk_cpu


def start_gateway(checkout: Path, upstream: str, name: str, extra: dict[str, str]) -> Target:
    """One gevent worker of `checkout` on `upstream`, reply cache off, no limits."""
    return start_relay(upstream, checkout=checkout, name=name, extra=extra)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--env-after", default="", help="KEY=VALUE,... for the second only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.env_after.split(",") if kv)
    upstream, fake = start_fake(tokens=8, pace=0.0)
    a = start_gateway(args.before.resolve(), upstream, "before", {})
    b = start_gateway(args.after.resolve(), upstream, "after", extra)
    workloads = {
        "c1": (1, {**CHAT, "stream": False}),
        "c16": (16, {**CHAT, "stream": False}),
        "stream c16": (16, {**CHAT, "stream": True}),
    }
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        w: {"before": [], "after": []} for w in workloads
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            for target in (a, b):  # warm up both
                wrk(target, 4, 1, workdir)
            for rnd in range(args.rounds):
                for name, (conns, body) in workloads.items():
                    order = (a, b) if rnd % 2 == 0 else (b, a)
                    for target in order:
                        target.body = body
                        results[name][target.name].append(
                            wrk_cpu(target, conns, args.seconds, workdir)
                        )
    finally:
        for target in (a, b):
            target.stop()
        os.killpg(fake.pid, 15)
    print(
        f"{'workload':12}{'req/s before':>14}{'after':>8}{'ratio':>7}"
        f"{'p50 ms before':>15}{'after':>8}{'CPU us/req before':>19}{'after':>8}{'ratio':>7}"
    )
    for name, runs in results.items():

        def med(field: str, runs: dict[str, list[dict[str, float]]] = runs) -> list[float]:
            return [statistics.median(r[field] for r in runs[t]) for t in ("before", "after")]

        rps, p50, cpu = med("rps"), med("p50_ms"), med("cpu_us")
        print(
            f"{name:12}{rps[0]:14.0f}{rps[1]:8.0f}{rps[1] / rps[0]:7.2f}"
            f"{p50[0]:15.2f}{p50[1]:8.2f}{cpu[0]:19.0f}{cpu[1]:8.0f}{cpu[1] / cpu[0]:7.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
