"""The Ollama face's setup: one gateway with an Ollama, a Dify app and an OpenAI-compatible
upstream behind it, named keys of every kind, and the two targets the client tests run against:
the fake Ollama itself and Relay in front of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.dify.conftest import ENV_NAMES, KEYS
from tests.fakes.ollama import FakeOllama

SECRETS = {
    "main": "sk-ollama-main-0001",
    "limited": "sk-ollama-limited-0002",
    "admin": "sk-ollama-admin-0003",
    "tight": "sk-ollama-tight-0004",
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


@pytest.fixture(scope="module")
def native_gateway(
    start_module_gateway, fake_ollama, fake_dify, fake_openai_chat, tmp_path_factory
):
    config = tmp_path_factory.mktemp("ollama-face") / "relay.toml"
    config.write_text(
        f"""
[backends.dify]
type = "dify"
url = "{fake_dify.url}/v1"
[backends.dify.apps.chatbot]
key_env = "{ENV_NAMES["chatbot"]}"

[backends.chatup]
type = "openai"
url = "{fake_openai_chat.url}/v1"
models = ["gpt-*"]

[backends.local]
type = "ollama"
url = "{fake_ollama.url}"

[keys.main]
env = "KEY_MAIN"

[keys.limited]
env = "KEY_LIMITED"
models = ["llama3.2*"]

[keys.admin]
env = "KEY_ADMIN"
ollama_admin = true

[keys.tight]
env = "KEY_TIGHT"
limits = {{ requests_per_minute = 2 }}
"""
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_CACHE_TTL": "0",  # the tests script different replies to the same request
        ENV_NAMES["chatbot"]: KEYS["chatbot"][0],
        **{f"KEY_{name.upper()}": secret for name, secret in SECRETS.items()},
    }
    return start_module_gateway(env)


@dataclass
class Target:
    """Where an Ollama client is pointed: the fake Ollama, or Relay with a key."""

    name: str
    host: str
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["direct", "relay"])
def target(request, ollama: FakeOllama) -> Target:
    if request.param == "direct":
        return Target("direct", ollama.url)
    gateway = request.getfixturevalue("native_gateway")
    return Target("relay", gateway.url, bearer("main"))
