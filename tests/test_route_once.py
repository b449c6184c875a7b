"""Each request resolves its route exactly once (issue 13): counted through real requests in an
in-process app, with the router itself left to do its work."""

from __future__ import annotations

import gc

import pytest

from services.core.router import Router
from tests.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}
REQUESTS = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/completions", {"model": "llama3.2", "prompt": "Once"}),
    ("/v1/completions", {"model": "llama3.2", "prompt": ["Once", "Twice"], "stream": True}),
    ("/v1/embeddings", {"model": "llama3.2", "input": "Hi"}),
    ("/v1/responses", {"model": "llama3.2", "input": "Hi"}),
    ("/v1/responses", {"model": "llama3.2", "input": "Hi", "stream": True}),
    ("/v1/messages", {**CHAT, "max_tokens": 5}),
    ("/v1/messages", {**CHAT, "max_tokens": 5, "stream": True}),
]


@pytest.fixture
def relay(app_client, fake_ollama):
    def build(keepalive: float):
        env = {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": API_KEY}
        built = app_client({**env, "RELAY_CACHE_TTL": "0"}, keepalive_seconds=keepalive)
        apps.append(built.app)
        return built

    apps: list = []
    yield build
    for app in apps:
        for backend in app.extensions["relay"].router.backends:
            backend.session.close()  # its pooled connections to the fake upstream


@pytest.fixture
def resolved(monkeypatch):
    calls: list[str] = []
    real = Router.resolve

    def counting(self, model, ctx=None):
        calls.append(model)
        return real(self, model, ctx)

    monkeypatch.setattr(Router, "resolve", counting)
    return calls


@pytest.mark.parametrize(("path", "body"), REQUESTS)
@pytest.mark.parametrize("keepalive", [0.0, 15.0])
def test_the_route_is_resolved_once_per_request(relay, ollama, resolved, path, body, keepalive):
    client = relay(keepalive).client
    resolved.clear()  # building the app may look routes up; requests are counted
    reply = client.post(path, json=body, headers=AUTH)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    reply.get_data()  # a stream runs to its end
    reply.close()
    assert resolved == ["llama3.2"]


def test_a_queued_stream_resolves_once_and_names_its_backend(relay, ollama, resolved):
    # Started later than the keep-alive interval: the access record names the backend from the
    # one resolution, instead of resolving again.
    built = relay(0.05)
    resolved.clear()
    ollama.script("llama3.2", headers_delay=0.3)
    reply = built.client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    body = reply.get_data()
    reply.close()
    assert b": keep-alive" in body and b"[DONE]" in body
    assert resolved == ["llama3.2"]
    line = next(x for x in built.logs().splitlines() if "POST /v1/chat/completions" in x)
    assert "backend=ollama" in line and "stream=yes" in line


GROUP = """
[backends.busy]
type = "ollama"
url = "{url}"
models = []

[backends.up]
type = "ollama"
url = "{url}"
models = ["*"]

[models."grp"]
targets = [{{model = "qwen3:8b", backend = "busy"}}, {{model = "llama3.2", backend = "up"}}]
"""


@pytest.mark.parametrize(("path", "body"), REQUESTS)
def test_a_group_is_one_resolution_whichever_target_answers(
    app_client, fake_ollama, ollama, resolved, tmp_path, path, body
):
    # The first target answers 503 busy, so every request falls back to the second: the
    # ordered list of targets came from the one resolution.
    ollama.script("qwen3:8b", status=503, error="server busy, please try again.")
    config = tmp_path / "relay.toml"
    config.write_text(GROUP.format(url=fake_ollama.url))
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    built = app_client(env, keepalive_seconds=0.0)
    try:
        resolved.clear()
        reply = built.client.post(path, json={**body, "model": "grp"}, headers=AUTH)
        assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
        reply.get_data()
        reply.close()
        assert resolved == ["grp"]
        asked = [r.body["model"] for r in ollama.requests if isinstance(r.body, dict)]
        assert "qwen3:8b" in asked and asked[-1] == "llama3.2"
    finally:
        for backend in built.app.extensions["relay"].router.backends:
            backend.session.close()
        # Drop this app now, with the connections it pooled, rather than at a later test's
        # garbage collection.
        del built
        gc.collect()
