"""What dropping Claude Code's billing block saves a backend with a prompt cache.

Claude Code starts its system prompt with a block `x-anthropic-billing-header: cc_version=…;`
whose value differs between conversations (and between its main and its small model's side
tasks). A backend that reuses the longest cached prompt prefix (llama.cpp, Ollama) must then
reprocess the whole prompt — system prompt and tool definitions, 15–25k tokens in real sessions —
whenever two conversations take turns on one model. Relay drops the block by default
(docs/anthropic.md "The billing block").

Starts llama.cpp's server (llama-cpp-python) with the tests' tiny model, and two Relays in front
of it: one dropping the block (the default), one keeping it (RELAY_ANTHROPIC_KEEP_BILLING_BLOCK).
Two conversations take turns through each, Claude-Code-shaped (billing block, then a long system
prompt), and the time per turn is printed. Run by hand:

    .venv/bin/python bench/billing_block.py [--turns 40] [--system-bytes 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import KEY, free_port, percentile, start_relay, wait_for  # noqa: E402
from tests.real.tiny_model import write_model  # noqa: E402

HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}


def start_llama(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    model = write_model(workdir / "tiny.gguf")
    config = {
        "host": "127.0.0.1",
        "port": port,
        "interrupt_requests": False,
        "models": [
            {
                "model": str(model),
                "model_alias": "tiny",
                "n_ctx": 8192,
                "n_threads": 1,
                "n_threads_batch": 1,
                "verbose": False,
            }
        ],
    }
    (workdir / "llama.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "llama_cpp.server", "--config_file", "llama.json"]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def body(conversation: int, system_text: str) -> dict[str, object]:
    billing = (
        f"x-anthropic-billing-header: cc_version=2.1.332.{conversation:03x}; cc_entrypoint=cli;"
    )
    return {
        "model": "tiny",
        "max_tokens": 4,
        "temperature": 0,
        "system": [
            {"type": "text", "text": billing},
            {"type": "text", "text": system_text, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [{"role": "user", "content": f"Turn of conversation {conversation}."}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--system-bytes", type=int, default=3000)
    args = parser.parse_args()
    # Roughly one token per byte with the tiny model's vocabulary (tests/real/tiny_model.py).
    system_text = ("You are a careful coding agent. Use the tools. " * 200)[: args.system_bytes]

    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    llama_port = free_port()
    llama = start_llama(workdir, llama_port)
    toml = workdir / "relay.toml"
    toml.write_text(
        f'[backends.llama]\ntype = "openai"\nurl = "http://127.0.0.1:{llama_port}/v1"\n'
    )
    ports = {"dropped (default)": free_port(), "kept": free_port()}
    relays = {
        "dropped (default)": start_relay(
            ports["dropped (default)"], RELAY_CONFIG=str(toml), RELAY_CACHE_TTL="0"
        ),
        "kept": start_relay(
            ports["kept"],
            RELAY_CONFIG=str(toml),
            RELAY_CACHE_TTL="0",
            RELAY_ANTHROPIC_KEEP_BILLING_BLOCK="true",
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in relays}
    try:
        wait_for(f"http://127.0.0.1:{llama_port}/v1/models")
        for port in ports.values():
            wait_for(f"http://127.0.0.1:{port}/health")
        session = requests.Session()
        for name, port in ports.items():
            url = f"http://127.0.0.1:{port}/v1/messages"
            for turn in range(args.turns + 2):  # two conversations take turns
                start = time.perf_counter()
                resp = session.post(url, json=body(turn % 2, system_text), headers=HEADERS)
                elapsed = (time.perf_counter() - start) * 1000
                assert resp.status_code == 200, resp.text[:300]
                if turn >= 2:  # the first turn of each conversation is cold either way
                    times[name].append(elapsed)
    finally:
        for relay in relays.values():
            relay.send_signal(signal.SIGQUIT)
        llama.terminate()
        for relay in relays.values():
            relay.wait(10)
        llama.wait(10)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"llama.cpp server, tiny model, 1 thread; system prompt {args.system_bytes} bytes "
        f"(~1 token a byte); two conversations taking turns, {args.turns} turns each way\n"
    )
    print(f"{'billing block':20}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}")
    for name, values in times.items():
        print(
            f"{name:20}{percentile(values, 0.5):9.1f}{percentile(values, 0.9):9.1f}"
            f"{statistics.mean(values):9.1f}"
        )


if __name__ == "__main__":
    main()
