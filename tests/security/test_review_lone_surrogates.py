"""A lone UTF-16 surrogate (`"\\ud800"`) in a request is valid JSON but not Unicode text.

Relay writes its replies as UTF-8 without escaping non-ASCII characters, and a lone surrogate
cannot be encoded: any reply that echoed the caller's string (the 403 naming a model, a stored
Response's metadata, a chat reply's model) was an unhandled 500, or a stream cut off. Every
answer must be a well-formed JSON envelope."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import API_KEY
from tests.security.passthrough_setup import LIMITED, limited_gateway, serve_chat_upstream


@pytest.fixture(scope="module")
def upstream():
    yield from serve_chat_upstream()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    return limited_gateway(start_module_gateway, upstream, tmp_path_factory.mktemp("surrogates"))


def _post(gw, path: str, body: str, key: str = LIMITED, stream: bool = False):
    return requests.post(
        gw.url + path,
        data=body.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        stream=stream,
    )


MESSAGES = '"messages":[{"role":"user","content":"x"}]'

CASES = [
    ("/v1/chat/completions", '{"model":"\\ud800",' + MESSAGES + "}"),
    ("/v1/chat/completions", '{"model":"gpt-\\udfff",' + MESSAGES + "}"),
    ("/v1/moderations", '{"model":"\\ud800","input":"x"}'),
    ("/v1/embeddings", '{"model":"\\ud83d","input":"x"}'),
    ("/v1/images/generations", '{"model":"\\ud800","prompt":"x"}'),
    ("/v1/responses", '{"model":"\\ud800","input":"x"}'),
    ("/v1/responses", '{"model":"gpt-test","input":"x","metadata":{"a":"\\ud800"}}'),
    ("/v1/responses", '{"model":"gpt-test","input":"x","metadata":{"\\udc00":"a"}}'),
    ("/v1/chat/completions", '{"model":"gpt-test","user":"\\ud800",' + MESSAGES + "}"),
]


@pytest.mark.parametrize(("path", "body"), CASES)
def test_lone_surrogates_never_make_a_500(gw, path, body):
    resp = _post(gw, path, body)
    assert resp.status_code < 500, resp.text
    reply = json.loads(resp.content.decode("utf-8"))  # strict UTF-8, valid JSON
    if resp.status_code >= 400:
        assert set(reply["error"]) == {"message", "type", "param", "code"}


def test_a_stream_echoing_a_lone_surrogate_is_not_cut(gw):
    body = '{"model":"gpt-test","stream":true,"input":"x","metadata":{"a":"\\ud800"}}'
    resp = _post(gw, "/v1/responses", body, key=API_KEY, stream=True)
    text = resp.content.decode("utf-8")
    assert resp.status_code < 500, text
    if resp.status_code == 200:
        assert "response.completed" in text or "response.failed" in text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            # temperature 0: the reply is cached (the default caches deterministic requests)
            {"model": "gpt-test", "temperature": 0, "messages": [{"role": "user", "content": "a"}]},
        ),
        (
            "/v1/chat/completions",
            {
                "model": "gpt-test",
                "temperature": 0,
                "stream": True,
                "messages": [{"role": "user", "content": "b"}],
            },
        ),
        ("/v1/responses", {"model": "gpt-test", "input": "c"}),
        ("/v1/responses", {"model": "gpt-test", "input": "d", "stream": True}),
    ],
)
def test_a_lone_surrogate_from_the_upstream_is_escaped_not_a_500(gw, upstream, path, body):
    from tests.fakes.openai_upstream import Reply

    upstream.reply = Reply(content=["ok \ud800", " end"])
    try:
        for attempt in range(2):  # the second comes from the reply cache or the stored Response
            resp = _post(gw, path, json.dumps(body), key=API_KEY, stream=True)
            text = resp.content.decode("utf-8")  # strict UTF-8
            assert resp.status_code == 200, text
            if path == "/v1/chat/completions":
                assert resp.headers["X-Cache"] == ("HIT" if attempt else "MISS")
            assert "\\ud800" in text
            if body.get("stream"):
                assert "[DONE]" in text or "response.completed" in text, text
            else:
                reply = json.loads(text)
                if path == "/v1/responses":
                    stored = requests.get(
                        f"{gw.url}/v1/responses/{reply['id']}",
                        headers={"Authorization": f"Bearer {API_KEY}"},
                    )
                    assert stored.status_code == 200, stored.text
    finally:
        upstream.reply = Reply()
