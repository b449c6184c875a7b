"""Flame graphs of one Relay gevent worker under load, with py-spy (see bench/profiles/README.md).

Starts the fake Ollama and Relay (one gevent worker, reply cache off, no limits, LOG_LEVEL=warn
as in bench/compare.py), drives it with wrk over keep-alive connections and samples the worker
with py-spy for the whole run: once non-streaming, once streaming. Writes an SVG flame graph and
py-spy's collapsed stacks for each, and prints where the samples went, by library.

    python -m bench.profile bench/profiles --py-spy /path/to/py-spy [--seconds 20]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import tempfile
from pathlib import Path

from bench.ab import start_gateway
from bench.servers import CHAT, ROOT, start_fake, worker_pid

LOAD = ("nonstream", False), ("stream", True)


# Where a sample's time goes: the innermost frame that matches, first pattern first.
CATEGORIES = [
    ("socket send/recv syscalls", r"gevent/_socketcommon\.py|gevent/_socket3|socket\.py"),
    ("DNS via gevent thread pool", r"gevent/resolver|gevent/threadpool|gevent/_threading"),
    ("flask-limiter / limits", r"flask_limiter/|/limits/"),
    ("requests / urllib3 / http.client", r"requests/|urllib3/|http/client\.py"),
    ("HTTP server (gevent pywsgi, relay_worker)", r"gevent/pywsgi\.py|\(relay_worker\.py"),
    ("gunicorn HTTP parser", r"gunicorn/http/(parser|message|unreader|body)"),
    ("gunicorn response/write", r"gunicorn/"),
    ("logging (loguru)", r"loguru/"),
    ("metrics (prometheus_client)", r"prometheus_client/"),
    ("JSON encode/decode", r"json/|orjson"),
    ("usage ledger (sqlalchemy)", r"sqlalchemy/|services/usage/"),
    ("flask / werkzeug", r"flask/|werkzeug/"),
    ("Relay's own code", r"\((services|blueprints)/|\((app|wsgi)\.py"),
    ("gevent hub / other", r"gevent/"),
]


def costs(collapsed: Path) -> list[tuple[str, float]]:
    """Share of samples per category, from py-spy's collapsed stacks."""
    total = 0
    shares: collections.Counter[str] = collections.Counter()
    for row in collapsed.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        total += int(count)
        shares[_category(stack.split(";"))] += int(count)
    return [(name, n / max(1, total)) for name, n in shares.most_common()]


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tag", default="", help="suffix for the file names, e.g. -after")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    upstream, fake = start_fake(tokens=8, pace=0.0)
    relay = start_gateway(ROOT, upstream, "relay", {})
    pid = worker_pid(relay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, stream in LOAD:
                script = Path(tmp) / "load.lua"
                script.write_text(
                    'wrk.method = "POST"\n'
                    f"wrk.body = {json.dumps(json.dumps({**CHAT, 'stream': stream}))}\n"
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f'wrk.headers["Authorization"] = "{relay.headers["Authorization"]}"\n'
                )
                load = subprocess.Popen(
                    [
                        "wrk",
                        "-t2",
                        f"-c{args.connections}",
                        f"-d{args.seconds + 2}s",
                        "-s",
                        str(script),
                        relay.url + relay.path,
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                base = args.out / f"{name}{args.tag}"
                # Two samplers at once (one per format), neither pausing the worker.
                spies = [
                    subprocess.Popen(
                        [
                            args.py_spy,
                            "record",
                            "-p",
                            str(pid),
                            "-d",
                            str(args.seconds),
                            "-r",
                            "200",
                            "--nonblocking",
                            "-f",
                            fmt,
                            "-o",
                            str(base) + suffix,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".txt"))
                ]
                for spy in spies:
                    spy.wait()
                out, _ = load.communicate()
                rps = [x for x in out.splitlines() if "Requests/sec" in x]
                print(f"{name}: {rps[0].strip() if rps else out}")
                for name, share in costs(Path(str(base) + ".txt")):
                    print(f"  {share:6.1%}  {name}")
    finally:
        relay.stop()
        fake.kill()


if __name__ == "__main__":
    main()
