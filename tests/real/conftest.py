"""A real upstream: llama.cpp's OpenAI-compatible server (llama-cpp-python) running the tiny
model of tiny_model.py on loopback, and a gateway with it as an OpenAI-compatible backend."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import API_KEY, Gateway, ServerProcess, free_port
from tests.real.tiny_model import write_model

CHAT, EMBED = "tiny", "tiny-embed"


class LlamaServer(ServerProcess):
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
            # Without this a second request cuts the running stream short (docs/backends.md).
            "interrupt_requests": False,
            "models": [
                {**common, "model_alias": CHAT},
                {**common, "model": embed_path, "model_alias": EMBED, "embedding": True},
                common,
            ],
        }
        (workdir / "llama.json").write_text(json.dumps(config))
        super().__init__(workdir / "llama.log")
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
        self.wait_answering("/v1/models", timeout, step=0.1)


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
