"""Pass-through paths (finding 1): only plain paths under /v1 go upstream, exactly as checked.

Requests and urllib3 remove dot segments before sending, so the attacks go out on raw sockets:
the gateway must see them as an attacker sends them (`curl --path-as-is`).
"""

from __future__ import annotations

import http.client
import json
import re
import socket

import pytest

import config
from tests.conftest import API_KEY
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-upstream-gateway-key"


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


def _config(tmp_path_factory, upstream, extra: str = "") -> str:
    path = tmp_path_factory.mktemp("passthrough") / "relay.toml"
    path.write_text(
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nkey_env = "UP_KEY"\n'
        f'models = ["gpt-*"]\npassthrough = true\n{extra}'
    )
    return str(path)


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    config = _config(tmp_path_factory, upstream)
    return start_module_gateway(
        {"RELAY_CONFIG": config, "RELAY_API_KEYS": API_KEY, "UP_KEY": UPSTREAM_KEY}
    )


@pytest.fixture(scope="module")
def gw_listed(start_module_gateway, upstream, tmp_path_factory):
    """Pass-through limited by the operator to audio and moderations."""
    config = _config(
        tmp_path_factory, upstream, 'passthrough_paths = ["audio/*", "/moderations"]\n'
    )
    return start_module_gateway(
        {"RELAY_CONFIG": config, "RELAY_API_KEYS": API_KEY, "UP_KEY": UPSTREAM_KEY}
    )


def send_raw(gw, target: bytes, method: bytes = b"GET", body: bytes = b"") -> tuple[int, bytes]:
    """Send one request with the target exactly as given; return status and body."""
    head = (
        method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


def forwarded(upstream) -> list[str]:
    """The request targets the upstream received from pass-through (with the gateway's key)."""
    return [
        r.raw_uri
        for r in upstream.requests
        if r.headers.get("Authorization") == f"Bearer {UPSTREAM_KEY}" and r.path != "/v1/models"
    ]


def assert_refused(status: int, body: bytes, statuses: tuple[int, ...] = (400, 404)) -> None:
    assert status in statuses, (status, body)
    # Relay's envelope when Relay answered; the HTTP server may refuse a malformed line first.
    if body.startswith(b"{"):
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    assert b"Traceback" not in body


TRAVERSALS = [
    b"/v1/x/..%2Fchat/completions",
    b"/v1/..%2Fadmin",
    b"/v1/x/../chat/completions",
    b"/v1/../admin",
    b"/v1/audio/../../admin",
    b"/v1/x/./../chat/completions",
    b"/v1/./chat/completions",
    b"/v1/%2e%2e/admin",
    b"/v1/%2E%2E/admin",
    b"/v1/%2E./admin",
    b"/v1/.%2e/admin",
    b"/v1/x/%2e%2e%2fchat%2fcompletions",
    b"/v1/x/%252e%252e/chat/completions",
    b"/v1/x/%252e%252e%252fadmin",
    b"/v1/audio%2fspeech",
    b"/v1/audio%2Fspeech",
    b"/v1/audio%5cspeech",
    b"/v1/audio%5Cspeech",
    b"/v1/audio\\speech",
    b"/v1/x\\..\\..\\admin",
    b"/v1/..\\admin",
    b"/v1/audio/speech%00",
    b"/v1/audio/%00speech",
    b"/v1/audio/speech%0d%0aX-Injected:%201",
    b"/v1/audio/speech%09",
    b"/v1/audio//speech",
    b"/v1/audio/speech/",
    b"/v1/audio/.../speech",
    b"/v1/audio/speech;jsessionid=1",
    b"/v1/audio/sp%65ech",
    b"/v1/audio/spe\xc3\xa9ch",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t.decode("latin-1"))
def test_traversal_and_encoded_paths_are_refused_and_never_forwarded(gw, upstream, target):
    upstream.reset()
    status, body = send_raw(gw, target, b"POST", b'{"model": "gpt-test", "input": "x"}')
    assert_refused(status, body)
    assert forwarded(upstream) == []


@pytest.mark.parametrize(
    "target",
    [b"/v1/audio/speech\x00", b"/v1/audio/sp\x01eech", b"/v1/audio/sp\x7feech"],
    ids=["nul", "ctrl", "del"],
)
def test_control_characters_on_the_request_line_never_reach_the_upstream(gw, upstream, target):
    upstream.reset()
    status, body = send_raw(gw, target)
    assert_refused(status, body)
    assert forwarded(upstream) == []


def test_absolute_form_target_is_refused(gw, upstream):
    upstream.reset()
    target = f"http://127.0.0.1:{gw.port}/v1/x/../chat/completions".encode()
    status, body = send_raw(gw, target, b"POST", b'{"model": "gpt-test"}')
    assert_refused(status, body)
    assert forwarded(upstream) == []


SERVED_SPELLINGS = [
    (b"GET", b"/v1/chat/completions"),
    (b"GET", b"/v1/chat/completions/chatcmpl-1/messages"),
    (b"POST", b"/v1/Chat/Completions"),
    (b"POST", b"/v1/CHAT/COMPLETIONS"),
    (b"POST", b"/v1/chat/completions."),
    (b"POST", b"/v1/chat./completions"),
    (b"PUT", b"/v1/completions"),
    (b"POST", b"/v1/Completions"),
    (b"POST", b"/v1/embeddings."),
    (b"POST", b"/v1/EMBEDDINGS"),
    (b"GET", b"/v1/responses/resp_1"),
    (b"DELETE", b"/v1/responses/resp_1"),
    (b"POST", b"/v1/Responses"),
    (b"POST", b"/v1/images/Generations"),
    (b"PUT", b"/v1/images/generations"),
    (b"DELETE", b"/v1/models/ft:gpt-test:org:custom"),
    (b"POST", b"/v1/models"),
    (b"GET", b"/v1/Models"),
]


@pytest.mark.parametrize(("method", "target"), SERVED_SPELLINGS, ids=lambda v: v.decode("latin-1"))
def test_routes_relay_serves_are_never_passed_through(gw, upstream, method, target):
    upstream.reset()
    status, body = send_raw(gw, target, method, b'{"model": "gpt-forbidden", "prompt": "x"}')
    assert_refused(status, body, (404, 405))
    assert forwarded(upstream) == []


def test_plain_paths_reach_the_upstream_byte_for_byte(gw, upstream):
    upstream.reset()
    status, body = send_raw(gw, b"/v1/moderations", b"POST", b'{"input": "bad"}')
    assert status == 200 and b'"flagged": true' in body
    status, _ = send_raw(gw, b"/v1/files/file-ab_c.1~x:y/content?limit=2&after=a%20b")
    assert status == 404  # the fake has no such file; what matters is what it was asked
    assert forwarded(upstream) == [
        "/v1/moderations",
        "/v1/files/file-ab_c.1~x:y/content?limit=2&after=a%20b",
    ]


def test_operator_path_list_limits_pass_through(gw_listed, upstream):
    upstream.reset()
    assert send_raw(gw_listed, b"/v1/moderations", b"POST", b'{"input": "x"}')[0] == 200
    assert send_raw(gw_listed, b"/v1/audio/speech", b"POST", b'{"input": "x"}')[0] == 200
    for target in (b"/v1/files", b"/v1/batches", b"/v1/moderations/x", b"/v1/Moderations"):
        status, body = send_raw(gw_listed, target)
        assert_refused(status, body, (404,))
    status, body = send_raw(gw_listed, b"/v1/audio/..%2Ffiles")
    assert_refused(status, body)
    assert forwarded(upstream) == ["/v1/moderations", "/v1/audio/speech"]


def test_a_script_name_header_cannot_smuggle_a_path_upstream(gw, upstream):
    # gunicorn takes SCRIPT_NAME from a header of trusted peers (loopback by default): the part
    # it names is Relay's mount point and never goes upstream; the rest is judged as ever.
    upstream.reset()
    for target in (b"/v1/x/../v1/chat/completions", b"/v1/x/../v1/../admin"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(
                b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nSCRIPT_NAME: /v1/x/..\r\n"
                b"Authorization: Bearer " + API_KEY.encode() + b"\r\nConnection: close\r\n\r\n"
            )
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            assert resp.status in (400, 404), resp.read()
    assert forwarded(upstream) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"audio/*"', "must be a list of paths or globs under /v1"),
        ("[1]", "must be a list of paths or globs under /v1"),
        ('["audio/*", "/"]', "has an empty path"),
    ],
)
def test_a_bad_path_list_stops_start_up(tmp_path, upstream, value, message):
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\n'
        f"passthrough = true\npassthrough_paths = {value}\n"
    )
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load({"RELAY_CONFIG": str(path), "RELAY_API_KEYS": API_KEY, "RELAY_ENV_FILE": ""})
