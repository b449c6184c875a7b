"""Fixtures: fake upstreams on loopback, the gateway under real gunicorn + gevent, real clients."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import openai
import pytest
import redis
import requests
from loguru import logger

from tests.fakes.dify import FakeDify
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-relay-test-key-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> None:
    """Poll until predicate() is truthy; fail the test when the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


class ServerProcess:
    """A server a test starts, its output in a log file; stop() ends it (then kills it)."""

    stop_signal = signal.SIGTERM
    proc: subprocess.Popen[bytes]
    url: str

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()

    def wait_answering(self, path: str, timeout: float, step: float) -> None:
        """Wait until GET `path` answers 200; fail with the log when the process dies or not."""
        what = type(self).__name__
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still loading
                pass
            time.sleep(step)
        raise RuntimeError(f"{what} did not start:\n{self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Gateway(ServerProcess):
    """A Relay process under gunicorn with the gevent worker, as production runs it."""

    # Quick shutdown: a graceful SIGTERM would wait for the clients' idle keep-alive connections
    # until graceful_timeout.
    stop_signal = signal.SIGQUIT

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str] | None = None) -> None:
        super().__init__(log_path)
        self.port = int(env.get("PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "RELAY_ENV_FILE": "",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            # Each gateway its own usage ledger, beside its log (not data/ in the work tree).
            "RELAY_DATABASE_URL": f"sqlite:///{log_path.parent / 'relay.db'}",
            # One worker unless a test asks for more: with REDIS_URL the default is one per core
            # (docs/operations.md "Workers"), and the tests count per-worker things.
            "RELAY_WORKERS": "1",
            # GUNICORN_CMD_ARGS="-k ..." runs every gateway under another worker class.
            **{k: v for k, v in os.environ.items() if k == "GUNICORN_CMD_ARGS"},
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *(args or []), "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> Gateway:
        self.wait_answering("/health", timeout, step=0.05)
        return self


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    yield fake
    fake.close()


@pytest.fixture
def ollama(fake_ollama: FakeOllama) -> FakeOllama:
    """The session's fake Ollama, with scripts and records cleared for this test."""
    fake_ollama.reset()
    return fake_ollama


@pytest.fixture(scope="session")
def fake_dify() -> Iterator[FakeDify]:
    """A fake Dify server; tests reset it and add the apps they need."""
    fake = FakeDify()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def fake_openai_chat() -> Iterator[FakeOpenAI]:
    """A chat-only OpenAI-compatible upstream (like vLLM); tests reset it before use."""
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def fake_openai_responses() -> Iterator[FakeOpenAI]:
    """An upstream that only offers the Responses API; tests reset it before use."""
    fake = FakeOpenAI("responses")
    yield fake
    fake.close()


def _gateway_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """A gateway starter whose gateways all stop when the owning fixture's scope ends."""
    started: list[Gateway] = []

    def start(env: dict[str, str] | None = None, wait: bool = True, **kw: object) -> Gateway:
        log = tmp_path_factory.mktemp("gateway") / "gateway.log"
        gw = Gateway(env or {}, log, **kw)  # type: ignore[arg-type]
        started.append(gw)
        return gw.wait_ready() if wait else gw

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


# One starter per scope, so a gateway lives only as long as the fixture or test that started it
# (a session-wide starter kept every gateway of the run alive at once). Tests and function-scoped
# fixtures use start_gateway, module-scoped fixtures start_module_gateway, session-scoped ones
# start_session_gateway; pytest refuses a wider-scoped fixture that asks for a narrower starter.


@pytest.fixture
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with extra environment; it stops when the test ends."""
    yield from _gateway_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def start_module_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway for a module-scoped fixture; it stops when the module's tests are done."""
    yield from _gateway_factory(tmp_path_factory)


# The worker classes Relay runs under (docs/design.md §3.5): its own pywsgi one, the default, and
# gunicorn's gevent worker.
WORKER_CLASSES = ["gevent", "relay_worker.RelayWorker"]


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def worker_gateway(
    request: pytest.FixtureRequest,
    start_module_gateway: Callable[..., Gateway],
    fake_ollama: FakeOllama,
) -> Gateway:
    """A gateway on the fake Ollama, once under each worker class."""
    gw = start_module_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_CACHE_TTL": "0"},
        args=["-k", request.param],
    )
    assert f"Using worker: {request.param}" in gw.logs()
    return gw


@pytest.fixture(scope="session")
def start_session_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway shared by the whole run; it stops when the session ends."""
    yield from _gateway_factory(tmp_path_factory)


@pytest.fixture(scope="session")
def gateway(start_session_gateway: Callable[..., Gateway], fake_ollama: FakeOllama) -> Gateway:
    """The shared gateway: one key, Ollama at the fake, no reply cache (tests script replies)."""
    return start_session_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    )


class InProcessApp:
    """Relay built in this process by create_app, driven by Flask's test client.

    For configuration-variant tests that need no real process: no gunicorn, no gevent, no port.
    Streaming, cancellation, backpressure and start-up refusals stay under a real Gateway.
    """

    def __init__(self, env: dict[str, str] | None = None, **overrides: object) -> None:
        from app import create_app  # imported only by the tests that build the app here

        # The same clean environment a Gateway process gets, for as long as the app is built;
        # overrides are settings fields given straight to create_app.
        clean = {"PATH": os.environ.get("PATH", ""), "RELAY_ENV_FILE": "", "HOST": "127.0.0.1"}
        # No usage ledger unless a test asks for one: it would write into the working tree.
        clean["RELAY_USAGE"] = "off"
        self._log = io.StringIO()
        with (
            mock.patch.dict(os.environ, {**clean, **(env or {})}, clear=True),
            contextlib.redirect_stderr(self._log),  # configure_logging's sink writes here
        ):
            self.app = create_app(overrides)
        self.client = self.app.test_client()

    def logs(self) -> str:
        return self._log.getvalue()


@pytest.fixture
def app_client() -> Iterator[Callable[..., InProcessApp]]:
    """Build Relay in-process with extra environment (like start_gateway, without gunicorn)."""
    yield InProcessApp
    # create_app configured loguru for Relay; give the rest of the run loguru's default sink.
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    """The official openai SDK pointed at the gateway (no retries, so errors show at once)."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def http(gateway: Gateway) -> Iterator[requests.Session]:
    """A plain HTTP session with the key set, for byte-level assertions."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        yield session


# --- keys, limits, reply cache, Redis (issue 4) ---------------------------------------------


class RedisServer:
    """A real redis-server on a free loopback port, nothing saved to disk."""

    def __init__(self, workdir: Path) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is missing: ./scripts/test.sh installs it")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, timeout=10)

    def ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the whole run (tests/postgres.py); each test takes a
    fresh database of it with `postgres.new_database()`."""
    cluster = PostgresCluster()
    yield cluster
    cluster.close()


def write_config(path: Path, text: str) -> str:
    """Write a RELAY_CONFIG file for a test gateway and return its path."""
    path.write_text(text)
    return str(path)


# --- markers for the groups that need extra system packages ----------------------------------

# A test that uses one of these fixtures needs the system package behind it; it gets the marker
# so a contributor without the package can deselect the group (`-m "not nginx and not redis"`).
# Tests that call a program directly (chromium, node, systemd-analyze) carry their marker inline.
FIXTURE_MARKERS = {
    "nginx": "nginx",
    "redis_server": "redis",
    "s3_server": "s3",
    "postgres": "postgres",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
