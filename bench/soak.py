"""The long soak of the fault suite, run by hand: many rounds of many streams, half vanishing.

Starts a fake Ollama that answers every model and Relay under gunicorn (one gevent worker) on
loopback, then runs ROUNDS rounds of STREAMS concurrent streams, about half of whose clients
vanish at a random moment. After each round it waits until every upstream reply has ended and
no upstream or client socket is left in the worker, and prints the worker's RSS. It fails when
a finished client got anything but a complete stream or a clean error frame, or when sockets
are left over.

    .venv/bin/python bench/soak.py [--streams 2000] [--rounds 10] [--pace 0.02]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tests.conftest import API_KEY, Gateway  # noqa: E402
from tests.fakes.ollama_faults import AnyModelOllama  # noqa: E402
from tests.observe import rss_kib, worker_pids  # noqa: E402
from tests.stream_clients import finished_cleanly, quiet, storm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between tokens")
    args = parser.parse_args()

    fake = AnyModelOllama()
    fake.script("*", content=[f"t{i} " for i in range(30)], pace=args.pace)
    env = {
        "OLLAMA_BASE_URL": fake.url,
        "RELAY_API_KEYS": API_KEY,
        "RELAY_WORKER_CONNECTIONS": str(args.streams * 2),
        "LOG_LEVEL": "warn",
    }
    log = Path(tempfile.mkdtemp(prefix="relay-soak-")) / "gateway.log"
    gateway = Gateway(env, log).wait_ready()
    try:
        (pid,) = worker_pids(gateway.proc.pid)
        print(f"worker {pid}: RSS {rss_kib(pid) / 1024:.1f} MiB before the first round")
        for round_ in range(args.rounds):
            results = storm(gateway, args.streams, seed=round_)
            quiet(gateway, fake, pid)
            finished = finished_cleanly(results)
            print(
                f"round {round_ + 1}: {finished} finished, {args.streams - finished} vanished, "
                f"RSS {rss_kib(pid) / 1024:.1f} MiB, no sockets left"
            )
        assert "Traceback" not in gateway.logs(), f"tracebacks in {log}"
    finally:
        gateway.stop()
        fake.close()


if __name__ == "__main__":
    main()
