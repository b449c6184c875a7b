"""The Dify tests' setup: a fake Dify with an app of every type, and a gateway naming them."""

from __future__ import annotations

import hashlib

import openai
import pytest

from tests.conftest import API_KEY
from tests.fakes.dify import FakeDify

KEYS = {
    "chatbot": ("app-chatbot-key", "chat"),
    "agent-classic": ("app-agent-chat-key", "agent-chat"),
    "agent-new": ("app-agent-key", "agent"),
    "chatflow": ("app-chatflow-key", "advanced-chat"),
    "writer": ("app-completion-key", "completion"),
    "flow": ("app-workflow-key", "workflow"),
    "historian": ("app-history-key", "chat"),
}
ENV_NAMES = {app: "DIFY_KEY_" + app.upper().replace("-", "_") for app in KEYS}
USER_KEY_NAME = "env-" + hashlib.sha256(API_KEY.encode()).hexdigest()[:8]


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    """The fake Dify with a fresh app of every type for each test."""
    fake_dify.reset()
    fake_dify.serve_files = True
    for name, (key, mode) in KEYS.items():
        fake_dify.add_app(key, mode, name=name)
    return fake_dify


def dify_config(tmp_path, url: str, **backend: str) -> str:
    lines = ["[backends.dify]", 'type = "dify"', f'url = "{url}/v1"']
    lines += [f"{k} = {v}" for k, v in backend.items()]
    for app in KEYS:
        lines += [f'[backends.dify.apps."{app}"]', f'key_env = "{ENV_NAMES[app]}"']
        if app == "historian":
            lines.append('memory = "history"')
        if app == "chatbot":
            lines.append('inputs = {tone = "friendly"}')
    path = tmp_path / "dify.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def dify_gateway(start_module_gateway, fake_dify, tmp_path_factory):
    config = dify_config(tmp_path_factory.mktemp("dify"), fake_dify.url, allow_caller_keys="true")
    env = {"RELAY_CONFIG": config, "RELAY_API_KEYS": API_KEY}
    env.update({ENV_NAMES[app]: key for app, (key, _mode) in KEYS.items()})
    return start_module_gateway(env)


@pytest.fixture
def sdk(dify_gateway):
    with openai.OpenAI(base_url=dify_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def text_of(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def chat_requests(dify: FakeDify, path: str = "/v1/chat-messages"):
    return [r for r in dify.requests if r.path == path and r.method == "POST"]
