"""Request smuggling past Relay's pywsgi worker (relay_worker.py): every request line or
header block that gunicorn's own parser refuses, and that could hide or bend a body's framing,
is a 400 under both worker classes and ends the connection, so no byte of the body is ever read
as a next request; a malformed chunked body is a 400 under both (docs/design.md §3.5).
Raw sockets: the point is the bytes on the wire."""

from __future__ import annotations

import pytest

from tests.raw_http import exchange

# The body each request below declares: a whole request of its own, if framing is misread.
SMUGGLED = b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
LENGTH = b"%d" % len(SMUGGLED)


@pytest.mark.parametrize(
    "headers",
    [
        b"X-A: a\rContent-Length: " + LENGTH + b"\r\n",  # a bare CR splits one line in two
        b"Not a header line\r\nContent-Length: " + LENGTH + b"\r\n",  # hides what follows
        b"Content-Length : " + LENGTH + b"\r\n",  # a space before the colon
        b"X-A: a\r\n Content-Length: " + LENGTH + b"\r\n",  # obs-fold
        b"Content-Length: " + LENGTH + b"\nX-B: b\r\n",  # a bare LF inside the block
        b"Content-Length: +" + LENGTH + b"\r\n",
        b"Content-Length: " + LENGTH[:1] + b"_" + LENGTH[1:] + b"\r\n",  # int() reads 3_7
        b"X-A: a\x00b\r\nContent-Length: " + LENGTH + b"\r\n",
    ],
    ids=[
        "bare-cr",
        "line-without-colon",
        "space-before-colon",
        "obs-fold",
        "bare-lf",
        "plus-length",
        "underscore-length",
        "nul-in-value",
    ],
)
def test_a_header_block_gunicorn_refuses_is_400_and_no_body_byte_is_a_request(
    worker_gateway, headers
):
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n" + headers + b"\r\n" + SMUGGLED
    )
    answer = exchange(worker_gateway, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"application/json" not in answer  # the server refused it, not the app
    assert answer.count(b"HTTP/1.1 ") == 1  # /health never answered: nothing was smuggled


@pytest.mark.parametrize(
    "line",
    [
        b"GET /health\r\n",  # HTTP/0.9: no version, no headers
        b"GET /health\x0bHTTP/1.1\r\n",  # a vertical tab for a space
        b"GET  /health HTTP/1.1\r\n",  # two spaces
        b"GET /health HTTP/1.1\n",  # a bare LF
        b"G@T /health HTTP/1.1\r\n",  # a method that is no token
    ],
    ids=["http-0.9", "vertical-tab", "two-spaces", "bare-lf", "method-not-a-token"],
)
def test_a_request_line_gunicorn_refuses_never_reaches_the_app(worker_gateway, line):
    answer = exchange(worker_gateway, line + b"Host: relay\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"application/json" not in answer  # the server refused it, not the app


def test_a_malformed_chunk_is_a_400_never_a_500(worker_gateway):
    # gunicorn's own worker raises its parser's errors from the body's read, not OSError.
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n"
    )
    answer = exchange(worker_gateway, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1 ") == 1
