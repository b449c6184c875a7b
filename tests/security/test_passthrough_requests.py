"""What goes upstream on pass-through besides the path: no Relay key in caller mode (finding 12),
no hop-by-hop, account-choosing or client-address headers (16), JSON bodies held to the key's
models and refused with non-finite numbers (1, 14)."""

from __future__ import annotations

import hashlib
import http.client
import json

import pytest
import requests

from tests.conftest import API_KEY
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-upstream-gateway-key"
CALLERS_OWN = "sk-callers-own-openai-key"
LIMITED = "sk-relay-limited-key-0002"  # may use gpt-test only
OTHER = "sk-relay-other-key-0003"
REVOKED = "sk-relay-revoked-key-0004"
COMMA = "sk-relay,comma-key-0005"  # a key may hold a comma: it must not hide in a "list"
MAX_BODY = 4096


def sha(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


def _start(start_gateway, upstream, tmp_path_factory, auth: str):
    path = tmp_path_factory.mktemp("passthrough") / "relay.toml"
    path.write_text(
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nkey_env = "UP_KEY"\n'
        f'models = ["gpt-*"]\npassthrough = true\npassthrough_auth = "{auth}"\n\n'
        f'[keys.limited]\nhash = "{sha(LIMITED)}"\nmodels = ["gpt-test"]\n\n'
        f'[keys.other]\nhash = "{sha(OTHER)}"\n\n'
        f'[keys.revoked]\nhash = "{sha(REVOKED)}"\nenabled = false\n\n'
        f'[keys.comma]\nhash = "{sha(COMMA)}"\n'
    )
    env = {
        "RELAY_CONFIG": str(path),
        "RELAY_API_KEYS": API_KEY,
        "UP_KEY": UPSTREAM_KEY,
        "RELAY_MAX_BODY_BYTES": str(MAX_BODY),
    }
    return start_gateway(env)


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    return _start(start_module_gateway, upstream, tmp_path_factory, "gateway")


@pytest.fixture(scope="module")
def gw_caller(start_module_gateway, upstream, tmp_path_factory):
    return _start(start_module_gateway, upstream, tmp_path_factory, "caller")


def relay_keys_seen(upstream) -> list[str]:
    """Every Relay key that turned up anywhere in what the upstream received."""
    everything = json.dumps([[r.raw_uri, r.headers, repr(r.body)] for r in upstream.requests])
    return [k for k in (API_KEY, LIMITED, OTHER, REVOKED, COMMA) if k in everything]


def moderation(gw, headers: dict[str, str]) -> requests.Response:
    return requests.post(gw.url + "/v1/moderations", json={"input": "x"}, headers=headers)


# --- finding 12: caller mode never forwards a Relay key ---------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {API_KEY}",
        f"Bearer {OTHER}",
        f"Bearer {LIMITED}",
        f"Bearer {REVOKED}",
        f"bearer   {OTHER}  ",
        f"Token {OTHER}",
        OTHER,
        f"Bearer {CALLERS_OWN}, Bearer {OTHER}",
        f"Basic x,{OTHER}",
        f"Bearer {COMMA}",
    ],
)
def test_caller_mode_never_forwards_a_relay_key(gw_caller, upstream, authorization):
    upstream.reset()
    resp = moderation(gw_caller, {"X-Api-Key": API_KEY, "Authorization": authorization})
    assert resp.status_code == 200
    assert "Authorization" not in upstream.last("/v1/moderations").headers
    assert relay_keys_seen(upstream) == []


def test_caller_mode_still_forwards_the_callers_own_key(gw_caller, upstream):
    upstream.reset()
    resp = moderation(gw_caller, {"X-Api-Key": LIMITED, "Authorization": f"Bearer {CALLERS_OWN}"})
    assert resp.status_code == 200
    assert upstream.last("/v1/moderations").headers["Authorization"] == f"Bearer {CALLERS_OWN}"
    assert relay_keys_seen(upstream) == []


# --- finding 16: headers that are not the caller's to pass ------------------------------

SPOOFING = {
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "admin.internal",
    "X-Forwarded-Proto": "https",
    "X-Real-IP": "203.0.113.9",
    "True-Client-IP": "203.0.113.9",
    "Via": "1.1 somewhere",
}


def test_gateway_mode_drops_account_choice_connection_nominated_and_address_headers(gw, upstream):
    upstream.reset()
    resp = moderation(
        gw,
        {
            "Authorization": f"Bearer {API_KEY}",
            "OpenAI-Organization": "org-someone-else",
            "OpenAI-Project": "proj-someone-else",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "hop-value",
            "Keep-Alive": "timeout=5",
            "X-Harmless": "kept",
            **SPOOFING,
        },
    )
    assert resp.status_code == 200
    sent = {k.lower(): v for k, v in upstream.last("/v1/moderations").headers.items()}
    assert sent["x-harmless"] == "kept"
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in ["openai-organization", "openai-project", "x-secret-hop", "keep-alive"]:
        assert name not in sent
    for name in SPOOFING:
        assert name.lower() not in sent
    assert "203.0.113.9" not in json.dumps(sent) and "hop-value" not in json.dumps(sent)


def test_connection_close_nominating_a_header_drops_it(gw, upstream):
    # As the finding sent it: "close" and a header name in one Connection header.
    upstream.reset()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        "/v1/moderations",
        body=b'{"input": "x"}',
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
            "Connection": "close, X-Secret-Hop",
            "X-Secret-Hop": "hop-value",
        },
    )
    assert conn.getresponse().status == 200
    conn.close()
    assert "X-Secret-Hop" not in upstream.last("/v1/moderations").headers


def test_caller_mode_keeps_the_callers_own_account_choice(gw_caller, upstream):
    upstream.reset()
    headers = {
        "X-Api-Key": API_KEY,
        "Authorization": f"Bearer {CALLERS_OWN}",
        "OpenAI-Organization": "org-callers-own",
        **SPOOFING,
    }
    assert moderation(gw_caller, headers).status_code == 200
    sent = upstream.last("/v1/moderations").headers
    assert sent["Openai-Organization"] == "org-callers-own"
    assert not {k.lower() for k in sent} & {k.lower() for k in SPOOFING}


def test_reply_headers_named_in_connection_and_the_operators_org_are_dropped(gw, upstream):
    upstream.reset()
    resp = requests.get(gw.url + "/v1/hop-headers", headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 200
    assert resp.headers["X-Kept"] == "1"
    assert "X-Upstream-Hop" not in resp.headers
    assert "OpenAI-Organization" not in resp.headers


def test_caller_mode_replies_keep_the_callers_org(gw_caller, upstream):
    headers = {"X-Api-Key": API_KEY, "Authorization": f"Bearer {CALLERS_OWN}"}
    resp = requests.get(gw_caller.url + "/v1/hop-headers", headers=headers)
    assert resp.headers["OpenAI-Organization"] == "org-operator"
    assert "X-Upstream-Hop" not in resp.headers


# --- finding 1: a JSON body's model is held to the key's model list ---------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"model": "gpt-other", "input": "x"}'),
        ("Application/JSON; charset=utf-8", b'{"model": "gpt-other", "input": "x"}'),
        ("application/vnd.openai+json", b'{"model": "gpt-other", "input": "x"}'),
        (None, b'{"model": "gpt-other", "input": "x"}'),
        ("application/json", b'\xef\xbb\xbf{"model": "gpt-other"}'),
        ("application/json", '{"model": "gpt-other"}'.encode("utf-16")),
    ],
)
def test_json_body_model_outside_the_keys_list_is_403(gw, upstream, content_type, body):
    upstream.reset()
    headers = {"Authorization": f"Bearer {LIMITED}"}
    if content_type:
        headers["Content-Type"] = content_type
    resp = requests.post(gw.url + "/v1/moderations", data=body, headers=headers)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["type"] == "permission_error"
    assert resp.json()["error"]["param"] == "model"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-test", "model": "gpt-other"}',
        b'{"model": "gpt-other", "model": "gpt-test"}',
        b'{"model": ["gpt-other"]}',
        b'{"model": null}',
        b'{"model": "gpt-test", "input": ',
        b"[" * 200 + b"]" * 200,
    ],
)
def test_ambiguous_or_malformed_json_bodies_are_400(gw, upstream, body):
    upstream.reset()
    resp = requests.post(
        gw.url + "/v1/moderations",
        data=body,
        headers={"Authorization": f"Bearer {LIMITED}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_allowed_model_and_chunked_bodies_pass_intact(gw, upstream):
    upstream.reset()
    body = b'{"model": "gpt-test", "input": "bad"}'
    headers = {"Authorization": f"Bearer {LIMITED}", "Content-Type": "application/json"}
    resp = requests.post(gw.url + "/v1/moderations", data=body, headers=headers)
    assert resp.status_code == 200 and resp.json()["results"][0]["flagged"] is True
    # Sent chunked (no Content-Length): still read and checked.
    resp = requests.post(
        gw.url + "/v1/moderations", data=iter([body[:10], body[10:]]), headers=headers
    )
    assert resp.status_code == 200
    denied = iter([b'{"model": ', b'"gpt-other"}'])
    assert (
        requests.post(gw.url + "/v1/moderations", data=denied, headers=headers).status_code == 403
    )
    assert [r.body for r in upstream.requests] == [json.loads(body)] * 2


# --- finding 14 (pass-through part): non-finite numbers, bounded bodies ------------------


@pytest.mark.parametrize(
    "number", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1E+999", "0.1e99999"]
)
def test_non_finite_numbers_in_json_bodies_are_400(gw, upstream, number):
    upstream.reset()
    resp = requests.post(
        gw.url + "/v1/moderations",
        data=f'{{"input": "x", "temperature": {number}}}'.encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert upstream.requests == []


def test_bodies_of_other_types_stream_on_untouched(gw, upstream):
    upstream.reset()
    upload = b"\x00\x01binary" + b'{"model": "gpt-other", "temperature": NaN}' + b"x" * 1000
    resp = requests.post(
        gw.url + "/v1/files",
        data=upload,
        headers={"Authorization": f"Bearer {LIMITED}", "Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 200 and resp.json()["bytes"] == len(upload)
    resp = requests.post(
        gw.url + "/v1/audio/transcriptions",
        files={"file": ("a.mp3", b"ID3" + b"\x00" * 100)},
        data={"temperature": "NaN"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert resp.status_code == 404  # the fake has no transcriptions; it was asked, unchanged
    assert b"ID3" in upstream.last("/v1/audio/transcriptions").body


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "x/y"],
)
@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-other", "input": "x"}',
        b' \r\n\t{"model": "gpt-other"}',
        b'\xef\xbb\xbf{"model": "gpt-other"}',
        '{"model": "gpt-other"}'.encode("utf-16"),
    ],
    ids=["plain", "whitespace", "bom", "utf16"],
)
def test_json_under_another_content_type_is_checked_too(gw, upstream, content_type, body):
    # Go servers (Ollama's API, LocalAI) decode the body as JSON whatever its type says.
    upstream.reset()
    resp = requests.post(
        gw.url + "/v1/moderations",
        data=body,
        headers={"Authorization": f"Bearer {LIMITED}", "Content-Type": content_type},
    )
    assert resp.status_code in (400, 403), resp.text
    assert upstream.requests == []


def test_json_with_trailing_data_under_another_type_is_refused(gw, upstream):
    # A decoder that stops after the first value would read only the model the key may use.
    upstream.reset()
    resp = requests.post(
        gw.url + "/v1/moderations",
        data=b'{"model": "gpt-test"} {"model": "gpt-other"}',
        headers={"Authorization": f"Bearer {LIMITED}", "Content-Type": "text/plain"},
    )
    assert resp.status_code == 400, resp.text
    assert upstream.requests == []


def test_json_bodies_are_bounded_even_without_a_length(gw, upstream):
    upstream.reset()
    big = b'{"input": "' + b"x" * (MAX_BODY * 2) + b'"}'
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    chunked = requests.post(gw.url + "/v1/moderations", data=iter([big]), headers=headers)
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "request_too_large"
    sized = requests.post(gw.url + "/v1/moderations", data=big, headers=headers)
    assert sized.status_code == 413
    assert upstream.requests == []
