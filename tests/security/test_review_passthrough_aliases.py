"""Relay's own routes under another prefix are not passed through either.

Some OpenAI-compatible upstreams serve chat, completions and embeddings again below a model or
deployment name, taking the model from the path rather than the body (LiteLLM's
/v1/engines/{model}/chat/completions and /openai/deployments/{model}/chat/completions, OpenAI's
legacy /v1/engines/{model}/completions). Passed through, such a path ran any model with the
gateway's upstream key, past the key's model list, token charging and the reply cache.
"""

from __future__ import annotations

import pytest
import requests

from tests.security.passthrough_setup import LIMITED, limited_gateway, serve_chat_upstream


@pytest.fixture(scope="module")
def upstream():
    yield from serve_chat_upstream()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    return limited_gateway(start_module_gateway, upstream, tmp_path_factory.mktemp("aliases"))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/engines/gpt-other/chat/completions",
        "/v1/engines/gpt-other/completions",
        "/v1/engines/gpt-other/embeddings",
        "/v1/engines/gpt-other",
        "/v1/engines",
        "/v1/Engines/gpt-other/Chat/Completions",
        "/v1/openai/deployments/gpt-other/chat/completions",
        "/v1/openai/deployments/gpt-other/completions",
        "/v1/openai/deployments/gpt-other/embeddings",
        "/v1/openai/deployments/gpt-other/images/generations",
        "/v1/x/responses",
    ],
)
def test_relay_routes_below_another_prefix_are_not_passed_through(gw, upstream, path):
    upstream.reset()
    resp = requests.post(
        gw.url + path,
        json={"model": "gpt-test", "prompt": "x", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {LIMITED}"},
    )
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert [r.path for r in upstream.requests if r.path != "/v1/models"] == []


def test_other_paths_still_pass(gw, upstream):
    upstream.reset()
    headers = {"Authorization": f"Bearer {LIMITED}"}
    resp = requests.post(gw.url + "/v1/moderations", json={"input": "x"}, headers=headers)
    assert resp.status_code == 200
    resp = requests.get(gw.url + "/v1/files/file-1/content", headers=headers)
    assert [r.path for r in upstream.requests] == ["/v1/moderations", "/v1/files/file-1/content"]
