"""A real upstream: llama.cpp's OpenAI-compatible server (llama-cpp-python) running the tiny
model of tiny_model.py on loopback, and a gateway with it as an OpenAI-compatible backend."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import API_KEY, Gateway, free_port
from tests.real.tiny_model import write_model

CHAT, EMBED = "tiny", "tiny-embed"


class LlamaServer:
    """`python -m llama_cpp.server` with three models: `tiny` (chat), `tiny-embed` (the same
    weights, mean-pooled for embeddings) and `tiny` again without an alias, which the server
    then names by its file path."""

    def __init__(self, workdir: Path) -> None:
        if importlib.util.find_spec("llama_cpp") is None:  # not imported: it loads the library
            raise RuntimeError(
                "llama-cpp-python[server] is missing: ./scripts/test.sh installs it, or "
                "deselect these tests with -m 'not real_upstream'"
            )
        self.model_path = str(write_model(workdir / "tiny.gguf"))
        embed_path = str(write_model(workdir / "tiny-embed.gguf", embedding=True))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        common = {"model": self.model_path, "n_ctx": 2048, "n_threads": 1, "verbose": False}
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            # Without this a second request cuts the running stream short (issue 12, item 7).
            "interrupt_requests": False,
            "models": [
                {**common, "model_alias": CHAT},
                {**common, "model": embed_path, "model_alias": EMBED, "embedding": True},
                common,
            ],
        }
        (workdir / "llama.json").write_text(json.dumps(config))
        self.log_path = workdir / "llama.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--config_file",
                str(workdir / "llama.json"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited:\n{self.logs()}")
            try:
                if requests.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama.cpp's server did not start:\n{self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


def relay_config(llama: LlamaServer, extra: str = "") -> str:
    return f"""
[backends.llama]
type = "openai"
url = "{llama.url}/v1"
models = ["*"]
{extra}
"""


@pytest.fixture(scope="session")
def real_gateway(start_session_gateway, llama: LlamaServer, tmp_path_factory) -> Gateway:
    """Relay with llama.cpp's server as its only backend; no reply cache, no limits."""
    config = tmp_path_factory.mktemp("real") / "relay.toml"
    # The server knows only max_tokens: a limit given as max_completion_tokens goes as that.
    config.write_text(relay_config(llama, 'max_tokens_field = "max_tokens"'))
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    return start_session_gateway(env)


@pytest.fixture
def relay(real_gateway: Gateway) -> Iterator[openai.OpenAI]:
    """The openai SDK through Relay."""
    with openai.OpenAI(base_url=real_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def direct(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    """The openai SDK straight at llama.cpp's server, to compare with."""
    with openai.OpenAI(base_url=llama.url + "/v1", api_key="none", max_retries=0) as c:
        yield c
