"""Two fake Ollama servers (backends `a` and `b`) and an OpenAI-compatible one (`vllm`) behind a
gateway whose routing table each test writes (docs/routing.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import API_KEY, Gateway, free_port, write_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI

ADMIN = "routing-admin-token"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def fake_second() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    yield fake
    fake.close()


@pytest.fixture
def second(fake_second: FakeOllama) -> FakeOllama:
    fake_second.reset()
    return fake_second


@pytest.fixture
def vllm(fake_openai_chat: FakeOpenAI) -> FakeOpenAI:
    fake_openai_chat.reset()
    return fake_openai_chat


@pytest.fixture
def routed(
    start_gateway, tmp_path: Path, ollama: FakeOllama, second: FakeOllama, vllm: FakeOpenAI
) -> Callable[..., Gateway]:
    """Start a gateway with backends a, b (fake Ollamas), vllm (OpenAI-compatible) and dead
    (nothing listens there), plus the given TOML; the cache is off unless asked for."""

    def start(routes: str, backends: str = "", **env: str) -> Gateway:
        text = f"""
[backends.a]
type = "ollama"
url = "{ollama.url}"
models = ["llama3.2*", "qwen3:*", "nomic-embed-text*"]
{backends}
[backends.b]
type = "ollama"
url = "{second.url}"
models = []

[backends.vllm]
type = "openai"
url = "{vllm.url}/v1"
models = ["gpt-test*"]

[backends.dead]
type = "ollama"
url = "http://127.0.0.1:{free_port()}"
models = []

{routes}
"""
        path = write_config(tmp_path / "relay.toml", text)
        return start_gateway(
            {
                "RELAY_CONFIG": path,
                "RELAY_API_KEYS": API_KEY,
                "RELAY_CACHE_TTL": "0",
                "RELAY_METRICS_TOKEN": ADMIN,
                **env,
            }
        )

    return start


def chat(gw: Gateway, model: str, headers: dict[str, str] | None = None, **body: object):
    return requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], **body},
        headers=headers or AUTH,
        timeout=30,
    )


def chats(fake: FakeOllama, model: str | None = None) -> int:
    return len(
        [
            r
            for r in fake.requests
            if r.path == "/api/chat" and (model is None or r.body.get("model") == model)
        ]
    )


def access_lines(gw: Gateway, path: str = "POST /v1/chat/completions") -> list[str]:
    return [line for line in gw.logs().splitlines() if path in line and " status=" in line]


def ready(gw: Gateway) -> dict:
    return requests.get(gw.url + "/ready", headers={"Authorization": f"Bearer {ADMIN}"}).json()
