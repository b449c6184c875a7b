"""The upstream hop: one `requests` session per backend, and a short way through it for the
calls every request makes (docs/design.md §3.3 "The upstream hop").

A JSON call with at most some headers (chat, completions, embeddings, model lists) skips
`Session.request`: no settings merge, no cookie jar, no hooks, no environment. Its prepared
request is built here, with the same headers and body `requests` would send, and goes through
the mounted adapter's connection pool; callers still get a `requests.Response`, and failures
are the `requests` exceptions the session path raises. Everything else (form data, files,
query parameters, redirects turned off) takes the whole session.
"""

from __future__ import annotations

import json as jsonlib
import socket
import time
from collections.abc import Mapping
from datetime import timedelta
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.exceptions import InvalidJSONError
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, get_auth_from_url, get_encoding_from_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool

# JSON bodies as requests encodes them (no NaN), built once: json.dumps with any option set
# builds an encoder per call; compact separators, as the upstream reads them the same.
_ENCODER = jsonlib.JSONEncoder(allow_nan=False, separators=(",", ":"))

# Prepared URLs and base headers kept per URL: a backend calls a handful of paths per host.
_MAX_TEMPLATES = 64


class Transport:
    """A backend's HTTP client: `send` takes the short way when it can, the session otherwise."""

    def __init__(self, pool_size: int) -> None:
        self.session = requests.Session()
        # Don't consult proxy variables and .netrc on every call: it costs a scan of the
        # environment per request, and upstream addresses come from Relay's configuration.
        self.session.trust_env = False
        # One session serves every caller: a cookie an upstream sets on one caller's request
        # must never ride along on the next, which may be another key's. The jar keeps none.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        # One pool slot per concurrent request of the worker, or gevent requests queue up
        # behind the default ten (gevent/gevent#355).
        self.adapter = _Adapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)
        self._templates: dict[str, _Template] = {}

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        stream: bool,
        timeout: tuple[float, float],
        extra: dict[str, Any],
    ) -> requests.Response:
        if extra and extra.keys() != {"headers"}:
            return self.session.request(
                method, url, json=json, stream=stream, timeout=timeout, **extra
            )
        prepared = self.prepare(method, url, json, extra.get("headers"))
        start = time.perf_counter()
        resp = self.adapter.send(prepared, stream=stream, timeout=timeout, proxies={})
        resp.elapsed = timedelta(seconds=time.perf_counter() - start)
        if resp.is_redirect:
            resp = self._follow(resp, prepared, stream, timeout)
        if not stream:
            resp.content  # noqa: B018 - read now, as Session.send does, inside the caller's error mapping
        return resp

    def prepare(
        self, method: str, url: str, json: Any, headers: dict[str, str | None] | None
    ) -> requests.PreparedRequest:
        """What Session.prepare_request would build for these arguments, without its merges."""
        template = self._templates.get(url) or self._template(url)
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = template.url
        sent = template.headers.copy()
        if headers:
            for name, value in headers.items():
                if value is None:  # a None header removes a default, as in requests
                    sent.pop(name, None)
                else:
                    check_header_validity((name, value))
                    sent[name] = value
        body: bytes | None = None
        if json is not None:
            try:
                body = _ENCODER.encode(json).encode()
            except ValueError as e:
                raise InvalidJSONError(e, request=prepared) from None
            if "content-type" not in sent:
                sent["Content-Type"] = "application/json"
            sent["Content-Length"] = str(len(body))
        elif method not in ("GET", "HEAD") and "content-length" not in sent:
            sent["Content-Length"] = "0"
        if template.authorization is not None:  # credentials in the URL win, as in requests
            sent["Authorization"] = template.authorization
        prepared.headers = sent
        prepared.body = body
        return prepared

    def _template(self, url: str) -> _Template:
        """The session's own preparation of a bare request to this URL, kept for the next."""
        bare = self.session.prepare_request(requests.Request("GET", url))
        bare.headers.pop("Cookie", None)  # the short way sends no cookies: none kept here
        authorization = (
            bare.headers.pop("Authorization", None) if any(get_auth_from_url(url)) else None
        )
        template = _Template(str(bare.url), bare.headers, authorization)
        if len(self._templates) < _MAX_TEMPLATES:
            self._templates[url] = template
        return template

    def _follow(
        self,
        resp: requests.Response,
        prepared: requests.PreparedRequest,
        stream: bool,
        timeout: tuple[float, float],
    ) -> requests.Response:
        """Follow redirects the way Session.send does (rare for an upstream API)."""
        prepared._cookies = RequestsCookieJar()  # type: ignore[attr-defined]
        history = list(
            self.session.resolve_redirects(
                resp, prepared, stream=stream, timeout=timeout, verify=True, cert=None, proxies={}
            )
        )
        if not history:
            return resp
        last: requests.Response = history.pop()
        last.history = [resp, *history]
        return last


class _Adapter(HTTPAdapter):
    """requests' adapter, with what it works out again on every call kept per URL.

    The pool for a URL (requests parses the URL and builds the pool's key each time), whether
    that pool's certificate settings are in place (two file-system checks each time), and no
    cookie jar filled on the response (nothing reads it; the session keeps its own).
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._pools: dict[str, ConnectionPool] = {}

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> ConnectionPool:
        url = request.url
        if proxies or verify is not True or cert is not None or not isinstance(url, str):
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        pool = self._pools.get(url)
        if pool is None or getattr(pool, "pool", None) is None:  # new, or closed by turnover
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if len(self._pools) < _MAX_TEMPLATES:
                self._pools[url] = pool
        return pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if verify is True and cert is None and getattr(conn, "_relay_verified", False):
            return  # settled for this pool on its first request
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if verify is True and cert is None:
            conn._relay_verified = True

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url if isinstance(req.url, str) else str(req.url)
        response.request = req
        response.connection = self
        return response


class _Template:
    __slots__ = ("authorization", "headers", "url")

    def __init__(self, url: str, headers: CaseInsensitiveDict[str], authorization: str | None):
        self.url = url
        self.headers = headers
        self.authorization = authorization


class _Connection(HTTPConnection):
    """A pooled connection that sends a request in one write and checks liveness cheaply.

    Liveness: before reusing an idle connection urllib3 asks whether the peer closed it; its
    answer polls the socket, which gevent emulates at a cost on every request. Under gevent the
    socket wraps a non-blocking OS socket, so peeking at it answers the same question in one
    system call: nothing to read means alive; end of stream, data or an error means dropped
    (urllib3's own rule), and the pool opens a new connection instead.

    One write: urllib3 sends the headers, then the body, in two system calls (and two TCP
    segments the upstream reads separately); a body of bytes with its length known goes out
    with the headers instead.
    """

    _glued: bytes | None = None

    @property
    def is_connected(self) -> bool:
        return _peek_alive(self.sock, lambda: super(_Connection, self).is_connected)

    def request(
        self, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any
    ) -> None:
        if (
            type(body) is bytes
            and body
            and not kw.get("chunked")
            and headers is not None
            and _says_length(headers)
            and self._tunnel_host is None  # a proxy's CONNECT is the first write then
        ):
            self._glued, body = body, None
        try:
            super().request(method, url, body, headers, **kw)
        finally:
            self._glued = None

    def send(self, data: Any) -> None:
        if self._glued is not None:  # the headers' write (http.client's _send_output)
            data, self._glued = data + self._glued, None
        super().send(data)


class _TLSConnection(_Connection, HTTPSConnection):
    pass


def _says_length(headers: Any) -> bool:
    if isinstance(headers, CaseInsensitiveDict):  # what the adapter passes: one lookup
        return "content-length" in headers
    return "content-length" in (name.lower() for name in headers)


def _peek_alive(sock: Any, otherwise: Any) -> bool:
    raw = getattr(sock, "_sock", None)  # gevent's cooperative socket over the OS one
    if sock is None or raw is None or raw.gettimeout() != 0.0:
        return bool(otherwise())
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection
