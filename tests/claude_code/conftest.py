"""The real Claude Code CLI, run headless through a gateway to the fake Ollama.

`claude -p` runs with stdin from /dev/null, a throwaway HOME, its non-essential traffic switched
off and every proxy variable pointing at a loopback proxy that refuses and records whatever tries
to leave, so nothing it does can reach the internet (docs/development.md "Claude Code tests").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway, wait_until

HERE = Path(__file__).resolve().parent
CLAUDE = HERE / "node_modules" / ".bin" / "claude"
VERSION = "2.1.332"  # package.json pins it
KEY = "sk-relay-claude-code-0001"
KEY_NAME = "claude-dev"
MAIN_MODEL = "claude-local-main"  # Claude Code asks for these; the `claude-*` globs route them
FAST_MODEL = "claude-local-fast"

# What Claude Code 2.1.x honours to stay quiet: no telemetry, error reports, update checks or
# other calls home.
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
}


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        first = self.rfile.readline(8192).decode("latin-1").strip()
        if first:
            self.server.attempts.append(first)  # type: ignore[attr-defined]
        self.wfile.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


class BlockedProxy:
    """An HTTP proxy on loopback that refuses every request and remembers its first line."""

    def __init__(self) -> None:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuse)
        self.server.daemon_threads = True
        self.attempts: list[str] = []
        self.server.attempts = self.attempts  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    workdir: Path

    def result(self) -> dict[str, Any]:
        """The one JSON object of `--output-format json`."""
        return json.loads(self.stdout)

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of `--output-format stream-json`."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def blocked_proxy() -> Iterator[BlockedProxy]:
    proxy = BlockedProxy()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def cc_gateway(start_module_gateway, fake_ollama, tmp_path_factory) -> Gateway:
    """A gateway with a named key for `claude-*` models, all on an Ollama backend (the fake)."""
    where = tmp_path_factory.mktemp("claude-code-gateway")
    config = where / "relay.toml"
    config.write_text(
        f'[keys.{KEY_NAME}]\nenv = "RELAY_KEY_CLAUDE"\nmodels = ["claude-*"]\n\n'
        f'[backends.local]\ntype = "ollama"\nurl = "{fake_ollama.url}"\nmodels = ["claude-*"]\n'
    )
    (where / "logs").mkdir()
    gw = start_module_gateway(
        {
            "RELAY_CONFIG": str(config),
            "RELAY_KEY_CLAUDE": KEY,
            "RELAY_CACHE_TTL": "0",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_DIR": str(where / "logs"),
        }
    )
    gw.log_dir = where / "logs"  # type: ignore[attr-defined]
    return gw


def access_records(gw: Gateway, path: str = "/v1/messages") -> list[dict[str, Any]]:
    """The gateway's access-log records for `path` (JSON log lines)."""
    records = []
    for log_file in gw.log_dir.glob("relay.*.log"):  # type: ignore[attr-defined]
        for line in log_file.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):  # still being written
                continue
            record = json.loads(line)
            if record.get("path") == path and "status" in record:
                records.append(record)
    return records


def wait_access(gw: Gateway, count: int) -> list[dict[str, Any]]:
    wait_until(lambda: len(access_records(gw)) >= count, timeout=10)
    return access_records(gw)


@pytest.fixture
def claude(
    cc_gateway: Gateway, blocked_proxy: BlockedProxy, tmp_path: Path
) -> Iterator[Callable[..., Run]]:
    """Run `claude -p PROMPT ARGS...` headless against the gateway; returns the finished run.

    key: the secret it sends; bearer: as ANTHROPIC_AUTH_TOKEN (`Authorization: Bearer`, what
    guides and `ollama launch claude` set) or else as ANTHROPIC_API_KEY (`x-api-key`).
    """
    assert CLAUDE.exists(), "scripts/test.sh runs npm ci in tests/claude_code"
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    blocked_proxy.attempts.clear()
    running: list[subprocess.Popen[str]] = []

    def run(
        prompt: str, *args: str, key: str = KEY, bearer: bool = True, timeout: float = 90
    ) -> Run:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(tmp_path),
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": cc_gateway.url,
            "ANTHROPIC_AUTH_TOKEN": key if bearer else "",
            "ANTHROPIC_API_KEY": "" if bearer else key,
            "ANTHROPIC_MODEL": MAIN_MODEL,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": MAIN_MODEL,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": MAIN_MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": FAST_MODEL,
            "ANTHROPIC_SMALL_FAST_MODEL": FAST_MODEL,
            "CLAUDE_CODE_SUBAGENT_MODEL": MAIN_MODEL,
            "API_TIMEOUT_MS": "60000",
            **QUIET,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = blocked_proxy.url
        command = [str(CLAUDE), "-p", prompt, *args]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its tools' children go with it
        )
        running.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"claude ran over {timeout}s:\n{out}\n{err}") from None
        return Run(proc.returncode, out, err, time.monotonic() - started, workdir)

    yield run
    for proc in running:  # the CLI, and anything its tools left running in its session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    assert blocked_proxy.attempts == [], "Claude Code tried to leave loopback"
