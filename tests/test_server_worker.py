"""The HTTP server under both worker classes Relay supports (docs/design.md §3.5): gunicorn's
gevent worker and Relay's own pywsgi worker refuse the same malformed requests the same way, and
keep connections alive and close idle ones alike. Raw sockets: the point is the bytes on the wire.
"""

from __future__ import annotations

import http.client

import pytest

from tests.raw_http import exchange, status_of


def test_a_bad_request_line_is_400_never_500(worker_gateway):
    assert status_of(exchange(worker_gateway, b"GARBAGE\r\n\r\n")) == 400


def test_a_request_line_over_gunicorns_limit_is_414(worker_gateway):
    line = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: relay\r\n\r\n"
    assert status_of(exchange(worker_gateway, line)) == 414


@pytest.mark.parametrize(
    "headers",
    [b"X-Long: " + b"a" * 9000 + b"\r\n", b"".join(b"X-%d: 1\r\n" % i for i in range(101))],
    ids=["long-field", "too-many-fields"],
)
def test_a_header_block_over_gunicorns_limits_is_431(worker_gateway, headers):
    request = b"GET /health HTTP/1.1\r\nHost: relay\r\n" + headers + b"\r\n"
    assert status_of(exchange(worker_gateway, request)) == 431


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 2\r\nContent-Length: 0\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ],
    ids=["length-and-chunked", "two-lengths", "unknown-coding"],
)
def test_a_body_framed_two_ways_is_refused_and_the_connection_ends(worker_gateway, framing):
    # Two readings of where a body ends is how requests are smuggled past a proxy.
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n" + framing + b"\r\n0\r\n\r\n"
    answer = exchange(worker_gateway, request)  # returns only once the server has closed
    assert status_of(answer) in (400, 501)
    assert answer.count(b"HTTP/1.1 ") == 1


def test_requests_share_one_connection_and_the_last_one_closes_it(worker_gateway):
    conn = http.client.HTTPConnection("127.0.0.1", worker_gateway.port, timeout=10)
    conn.request("GET", "/health")
    first = conn.getresponse()
    first.read()
    conn.request("GET", "/health", headers={"Connection": "close"})
    second = conn.getresponse()
    second.read()
    conn.close()
    assert (first.status, second.status) == (200, 200)
    assert not first.will_close and second.will_close


def test_pipelined_requests_are_answered_in_order(worker_gateway):
    one = b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n"
    last = b"GET /nowhere HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    answer = exchange(worker_gateway, one + last)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\nHTTP/1.1 404 " in answer


def test_an_http_1_0_client_gets_its_answer_and_the_connection_ends(worker_gateway):
    answer = exchange(worker_gateway, b"GET /health HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 200 and answer.endswith(b'{"status":"ok"}\n')
    assert b"connection: close" in answer.lower()


def test_an_idle_connection_is_closed_by_the_server(worker_gateway):
    # keepalive (gunicorn.conf.py): the server ends a connection that sends no request; without
    # it pywsgi would wait forever and a stop would wait for every idle client.
    assert exchange(worker_gateway, b"") == b""
