"""/v1 paths Relay does not serve, passed to an OpenAI-compatible upstream behind Relay's keys,
with exactly one Authorization going upstream: the gateway's key or the caller's own."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.conftest import API_KEY
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-upstream-gateway-key"
CALLERS_OWN = "sk-callers-own-openai-key"


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


def gateway_with(start_gateway, upstream, tmp_path, auth: str):
    config = tmp_path / f"{auth}.toml"
    config.write_text(
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nkey_env = "UP_KEY"\n'
        f'models = ["gpt-*"]\npassthrough = true\npassthrough_auth = "{auth}"\n'
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "UP_KEY": UPSTREAM_KEY}
    return start_gateway(env)


def test_gateway_mode_sends_the_configured_key_and_never_relays(start_gateway, upstream, tmp_path):
    gw = gateway_with(start_gateway, upstream, tmp_path, "gateway")
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as sdk:
        result = sdk.moderations.create(input="bad")
    assert result.results[0].flagged is True
    sent = upstream.last("/v1/moderations")
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert API_KEY not in str(sent.headers)

    # The caller's own Authorization is dropped in gateway mode.
    resp = requests.post(
        gw.url + "/v1/moderations",
        json={"input": "ok"},
        headers={"X-Api-Key": API_KEY, "Authorization": f"Bearer {CALLERS_OWN}"},
    )
    assert resp.status_code == 200
    assert upstream.last("/v1/moderations").headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

    assert requests.post(gw.url + "/v1/moderations", json={"input": "x"}).status_code == 401
    assert len([r for r in upstream.requests if r.path == "/v1/moderations"]) == 2


def test_caller_mode_sends_the_callers_key_and_never_relays(start_gateway, upstream, tmp_path):
    gw = gateway_with(start_gateway, upstream, tmp_path, "caller")
    resp = requests.post(
        gw.url + "/v1/moderations",
        json={"input": "ok"},
        headers={"X-Api-Key": API_KEY, "Authorization": f"Bearer {CALLERS_OWN}"},
    )
    assert resp.status_code == 200
    sent = upstream.last("/v1/moderations")
    assert sent.headers["Authorization"] == f"Bearer {CALLERS_OWN}"
    assert "X-Api-Key" not in sent.headers and UPSTREAM_KEY not in str(sent.headers)

    # Relay's key in Authorization is Relay's: it never goes upstream.
    requests.post(
        gw.url + "/v1/moderations",
        json={"input": "ok"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert "Authorization" not in upstream.last("/v1/moderations").headers


def test_bodies_stream_both_ways_and_upstream_errors_pass_through(
    start_gateway, upstream, tmp_path
):
    gw = gateway_with(start_gateway, upstream, tmp_path, "gateway")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with requests.post(
        gw.url + "/v1/audio/speech", json={"input": "hi"}, headers=auth, stream=True
    ) as resp:
        assert resp.headers["Content-Type"] == "audio/mpeg"
        audio = b"".join(resp.iter_content(None))
    assert audio == b"".join(b"ID3" + bytes([i]) * 4096 for i in range(8))

    upload = b"x" * 1_000_000
    resp = requests.post(
        gw.url + "/v1/files",
        data=upload,
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    assert resp.json()["bytes"] == len(upload)

    missing = requests.get(gw.url + "/v1/nothing/here", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    # Relay's own routes still answer themselves.
    assert requests.get(gw.url + "/v1/models", headers=auth).json()["object"] == "list"
