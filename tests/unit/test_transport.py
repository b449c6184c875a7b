"""The upstream hop's short way sends what `requests` would send (docs/design.md §3.3 "The
upstream hop"): the same URL, headers and JSON for every kind of call that takes it."""

from __future__ import annotations

import json
import math

import pytest
import requests

from services.backends.transport import Transport

BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "Grüße"}], "stream": False}
CASES = [
    ("POST", "http://127.0.0.1:11434/api/chat", BODY, None),
    ("POST", "http://up.example:8000/v1/chat/completions", BODY, {"Authorization": "Bearer k"}),
    # Credentials in the URL win over a header, as in requests.
    ("POST", "http://user:pw@up.example/v1/chat/completions", BODY, {"Authorization": "Bearer k"}),
    # A None header leaves a default out; a caller's Content-Type is kept.
    ("POST", "http://up.example/v1/x", BODY, {"Accept-Encoding": None, "content-type": "a/b"}),
    ("GET", "http://up.example/v1/models", None, {"Authorization": "Bearer k"}),
    ("POST", "http://up.example/api/show", None, None),
    ("GET", "http://up.example/api/tags?x=a b", None, None),
]


@pytest.mark.parametrize(("method", "url", "body", "headers"), CASES)
def test_the_short_way_prepares_what_the_session_would(method, url, body, headers):
    transport = Transport(4)
    for _ in range(2):  # the first call builds the URL's template, the second reuses it
        short = transport.prepare(method, url, body, headers)
        full = transport.session.prepare_request(
            requests.Request(method, url, json=body, headers=headers)
        )
        assert (short.method, short.url) == (full.method, full.url)
        sent, expected = dict(short.headers.lower_items()), dict(full.headers.lower_items())
        if body is None:
            assert short.body is None and full.body is None
            assert sent == expected
        else:  # compact JSON: the same value in fewer bytes, and a length to match
            assert isinstance(short.body, bytes)
            assert json.loads(short.body) == json.loads(full.body)  # type: ignore[arg-type]
            assert int(sent.pop("content-length")) == len(short.body)
            expected.pop("content-length")
            assert sent == expected


def test_the_short_way_refuses_what_the_session_refuses():
    transport = Transport(4)
    url = "http://up.example/api/chat"
    with pytest.raises(requests.exceptions.InvalidJSONError):
        transport.prepare("POST", url, {"temperature": math.nan}, None)
    with pytest.raises(requests.exceptions.InvalidHeader):
        transport.prepare("POST", url, BODY, {"Authorization": "Bearer k\r\nX-Evil: 1"})
