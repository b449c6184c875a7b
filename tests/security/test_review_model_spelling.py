"""A `model` spelled in another case must not reach an upstream that matches JSON keys without
regard to case.

Go's encoding/json (Ollama's OpenAI-compatible API, LocalAI and other Go servers) matches an
object key to a field case-insensitively (with Unicode simple folding: "ſ" is "s", "K" is "k")
and, of two such keys, keeps the last. Relay read only the exact key `model`: `{"Model": ...}`
on pass-through was never checked, and on Relay's own routes `{"model": "allowed", "Model":
"other"}` was routed and checked as `allowed` while the upstream ran `other`."""

from __future__ import annotations

import json

import pytest
import requests

from tests.security.passthrough_setup import LIMITED, limited_gateway, serve_chat_upstream


def go_fold(name: str) -> str:
    return "".join(c.lower().upper() for c in name)


@pytest.fixture(scope="module")
def upstream():
    yield from serve_chat_upstream()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    return limited_gateway(start_module_gateway, upstream, tmp_path_factory.mktemp("spelling"))


def _model_spellings_seen(upstream) -> list[str]:
    """Top-level keys that a Go server would read as `model`, other than `model` itself."""
    return [
        k
        for r in upstream.requests
        if isinstance(r.body, dict)
        for k in r.body
        if go_fold(k) == "MODEL" and k != "model"
    ]


def _post(gw, path: str, body: bytes) -> requests.Response:
    return requests.post(
        gw.url + path,
        data=body,
        headers={"Authorization": f"Bearer {LIMITED}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "body",
    [
        {"Model": "gpt-other", "input": "x"},
        {"MODEL": "gpt-other", "input": "x"},
        {"model": "gpt-test", "Model": "gpt-other", "input": "x"},
        {"model": "gpt-test", "mODEL": "gpt-other", "input": "x"},
    ],
)
def test_passthrough_model_in_another_case_is_refused(gw, upstream, body):
    upstream.reset()
    resp = _post(gw, "/v1/moderations", json.dumps(body).encode())
    assert resp.status_code in (400, 403), resp.text
    assert resp.json()["error"]["param"] == "model"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-test",
                "Model": "gpt-other",
                "messages": [{"role": "user", "content": "x"}],
            },
        ),
        ("/v1/images/generations", {"model": "gpt-test", "MODEL": "gpt-other", "prompt": "cat"}),
        ("/v1/responses", {"model": "gpt-test", "Model": "gpt-other", "input": "x"}),
        ("/v1/embeddings", {"model": "gpt-test", "Model": "gpt-other", "input": "x"}),
    ],
)
def test_served_routes_refuse_a_second_spelling_of_model(gw, upstream, path, body):
    upstream.reset()
    resp = _post(gw, path, json.dumps(body).encode())
    assert _model_spellings_seen(upstream) == []
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_a_stream_flag_in_another_case_is_refused(gw, upstream):
    # Relay would answer as if not streaming while a Go upstream streams (or the reverse).
    upstream.reset()
    body = {
        "model": "gpt-test",
        "stream": False,
        "Stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = _post(gw, "/v1/chat/completions", json.dumps(body).encode())
    assert resp.status_code == 400, resp.text
    assert upstream.requests == []


def test_ordinary_bodies_still_pass(gw, upstream):
    upstream.reset()
    chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "Custom": 1}
    assert _post(gw, "/v1/chat/completions", json.dumps(chat).encode()).status_code == 200
    moderation = {"model": "gpt-test", "input": "x", "Model_hint": "x"}
    assert _post(gw, "/v1/moderations", json.dumps(moderation).encode()).status_code == 200
