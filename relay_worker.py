"""Relay's gunicorn worker: gevent's own HTTP server (pywsgi) with gunicorn's rules kept.

gunicorn's `gevent_pywsgi` worker serves requests with gevent's pywsgi instead of gunicorn's
parser: less work per request (docs/design.md §3.5). As shipped it differs from gunicorn's
`gevent` worker in what Relay relies on, so this worker restores it:

- the client socket is in `environ["gunicorn.socket"]`, where gunicorn's workers put it, for the
  body deadline and for lingering after a refused body (blueprints/request_body.py);
- the app can have the connection closed after its answer (services/common/server_connection.py):
  `Connection: close` goes out and the rest of an unread body is never read;
- a connection waits at most `keepalive` seconds for the next request line and headers (pywsgi
  alone waits forever), and a stopping worker closes connections after their current answer;
- gunicorn's limits: `limit_request_line` (414), `limit_request_fields` and
  `limit_request_field_size` (431); a bad request line or header is a 400, never a 500;
- a body is framed one way only: a Content-Length with chunked, two lengths or another coding
  are refused, as gunicorn's parser refuses them.
- request lines and header lines follow gunicorn's syntax, and a Content-Length is digits:
  http.client alone reads malformed header blocks in ways that hide a body's framing.
"""

from __future__ import annotations

import re
from typing import Any

from gevent import Timeout
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler  # type: ignore[import-untyped]


class _HeadersTooLarge(ValueError):
    """More header lines, or a longer one, than gunicorn's limits allow."""


class _BadHeaderLine(ValueError):
    """A header line gunicorn's parser refuses: http.client would read it another way."""


class _RequestLineTooLong(ValueError):
    """A request line longer than gunicorn's `limit_request_line`."""


class _NoBodyLeft:
    """Stands in for the request body once the connection is closing: pywsgi reads the rest of
    an unread body after each answer (to find the next request), however slowly it comes."""

    def _discard(self) -> None:
        pass


_NO_BODY_LEFT = _NoBodyLeft()
_TOO_LONG = b"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


# A header line as gunicorn accepts it: a token, a colon, a value without CR, LF or NUL, CRLF.
# http.client alone drops every header after a line it cannot read, joins folded lines and
# splits a line at a bare CR: each a way to hide a Content-Length from a proxy in front.
_FIELD_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\r\n\x00]*\r\n")
_DIGITS = re.compile(r"[0-9]+")
# The request line as gunicorn accepts it: a method token, a target, a version, single spaces,
# CRLF. pywsgi alone takes HTTP/0.9's two words, any whitespace between them and a bare LF.
_REQUEST_LINE = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ HTTP/[0-9]\.[0-9]\r\n")


class _BoundedLines:
    """The request's header lines as http.client reads them, within gunicorn's limits."""

    def __init__(self, rfile: Any, fields: int, field_size: int) -> None:
        self.rfile, self.fields_left, self.field_size = rfile, fields, field_size

    def readline(self, _limit: int = -1) -> bytes:
        line: bytes = self.rfile.readline(self.field_size + 3)
        if line.strip():
            self.fields_left -= 1
        if self.fields_left < 0 or len(line) > self.field_size + 2:
            raise _HeadersTooLarge("request header fields too large")
        if line not in (b"\r\n", b"") and not _FIELD_LINE.fullmatch(line):
            raise _BadHeaderLine(f"invalid header line: {line[:64]!r}")
        return line


COALESCE = 65536  # bytes of body sent in the same send as the headers (a copy costs more)


class RelayHandler(PyWSGIHandler):  # type: ignore[misc]  # gunicorn is untyped
    """One client connection: its requests one after the other, as gunicorn would serve them."""

    worker: Any = None  # the worker of this process, set in RelayWorker.patch
    remember: Any = None  # services.common.server_connection.remember, set there too
    timer: Any = None

    def handle_one_request(self) -> Any:
        # gunicorn's keep-alive: the request line and headers must come within `keepalive` s.
        timer = self.timer = Timeout.start_new(self.worker.cfg.keepalive or None)
        try:
            return super().handle_one_request()
        except Timeout as error:
            if error is not timer:
                raise
            return None  # idle or too slow: close the connection without an answer
        finally:
            timer.close()

    def read_request(self, raw_requestline: str) -> Any:
        if len(raw_requestline.rstrip()) > self.worker.cfg.limit_request_line:
            raise _RequestLineTooLong("request line too long")
        if not _REQUEST_LINE.fullmatch(raw_requestline):
            raise ValueError(f"invalid request line: {raw_requestline[:64]!r}")
        return super().read_request(raw_requestline)

    def MessageClass(self, fp: Any, *_args: Any) -> Any:  # noqa: N802 - pywsgi's name
        cfg = self.worker.cfg
        headers = super().MessageClass(
            _BoundedLines(fp, cfg.limit_request_fields, cfg.limit_request_field_size)
        )
        # Framing only one way, as gunicorn's parser insists: pywsgi alone would take chunked
        # over a Content-Length, the first of two lengths, and read a "gzip" body as none.
        lengths = headers.get_all("content-length") or []
        codings = [c.strip().lower() for c in headers.get_all("transfer-encoding") or []]
        if len(lengths) > 1 or (codings and (lengths or codings != ["chunked"])):
            raise ValueError(f"ambiguous framing: {lengths} {codings}")
        # Digits only, as gunicorn reads it: int() alone takes "+5" and "1_0".
        if lengths and not _DIGITS.fullmatch(lengths[0].strip(" \t")):
            raise ValueError(f"invalid Content-Length: {lengths[0]!r}")
        return headers

    def _handle_client_error(self, ex: Exception) -> Any:
        if isinstance(ex, _HeadersTooLarge):
            self.log_error("(from %s) %s", self.client_address, ex)
            return ("431", _TOO_LARGE)
        if isinstance(ex, _RequestLineTooLong):
            self.log_error("(from %s) %s", self.client_address, ex)
            return ("414", _TOO_LONG)
        if not isinstance(ex, ValueError):  # http.client's own errors: a bad header block
            ex = ValueError(f"invalid headers: {type(ex).__name__}")
        return super()._handle_client_error(ex)

    def get_environ(self) -> Any:
        self.timer.close()  # the request is in; the application has no such limit
        environ = super().get_environ()
        environ["gunicorn.socket"] = self.socket
        self.remember(self)
        if not self.worker.alive or not self.worker.cfg.keepalive:
            self.force_close()  # a stopping worker ends its connections after this answer
        return environ

    def force_close(self) -> None:
        """Close the connection after this answer (what gunicorn's Response.force_close does)."""
        self.close_connection = True

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        write = super().start_response(status, headers, exc_info)
        # pywsgi says nothing when it closes an HTTP/1.1 connection; gunicorn says "close".
        closing = self.close_connection and self.request_version == "HTTP/1.1"
        if closing and (b"Connection", b"close") not in self.response_headers:
            self.response_headers.append((b"Connection", b"close"))
        return write

    def run_application(self) -> None:
        try:
            super().run_application()
        finally:
            if self.close_connection:
                self.wsgi_input = _NO_BODY_LEFT

    # The status line and headers go out in one send with the first piece of body (up to
    # COALESCE bytes), not two: each send on a connection wakes the client once more
    # (docs/design.md §12). `_held` is None while the header block is awaited.
    _held: bytes | bytearray | None = b""

    def _write_with_headers(self, data: bytes) -> None:
        self._held = None if len(data) <= COALESCE else b""
        try:
            super()._write_with_headers(data)
            if self._held:  # no body came with the headers (an empty first piece)
                super()._sendall(self._held)
        finally:
            self._held = b""

    def _sendall(self, data: bytes | bytearray) -> None:
        if self._held is None:
            self._held = data  # the header block: sent with the body's first piece, next
            return
        if self._held:
            data, self._held = self._held + data, b""
        super()._sendall(data)

    def log_request(self) -> None:
        if self.worker.cfg.accesslog:  # Relay writes its own access line (gunicorn.conf.py)
            super().log_request()


class RelayWorker(GeventPyWSGIWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gevent_pywsgi worker with Relay's handler."""

    wsgi_handler = RelayHandler

    def patch(self) -> None:
        super().patch()
        # Imported only now: its greenlet-local must be made after gevent patched threading.
        from services.common import server_connection

        # One worker per process: its handler class may hold it.
        RelayHandler.worker = self
        RelayHandler.remember = staticmethod(server_connection.remember)
