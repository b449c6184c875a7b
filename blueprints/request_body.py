"""Request bodies as Relay reads them (docs/operations.md "Request bodies", docs/threat-model.md).

- Never more than RELAY_MAX_BODY_BYTES, whatever the framing: a Content-Length over it is
  refused before reading, a chunked body is read up to one byte past it; both are a 413.
- The whole body must arrive within RELAY_BODY_TIMEOUT_SECONDS of Relay starting to read it
  (408), so a client trickling bytes cannot hold a worker's connection for long.
- One key may be sending at most RELAY_MAX_UPLOADS_PER_KEY slow bodies at once in a worker
  (429). A body counts once it is still arriving after SLOW_AFTER seconds: a burst of requests
  whose bodies come at once never does, nor do requests whose body is in (streams).

After any of these errors the connection is closed: the rest of the body is never read.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import IO, Any

from flask import Flask, Response, current_app, g, request
from gunicorn.http.errors import ParseException  # type: ignore[import-untyped]

from services.access.upload_slots import UploadSlots
from services.common import server_connection
from services.common.timers import Deadline, SharedTimers
from services.core.errors import (
    InvalidRequestError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
)

CHUNK = 65536
LINGER_SECONDS = 2  # how long a refused client may go on sending before the connection ends
SLOW_AFTER = 1.0  # a body still arriving after this many seconds takes an upload slot
_TIMERS = SharedTimers()  # one per worker: a timer thread per request costs ~50 µs


def read_body() -> bytes:
    """Return the whole request body (read once per request, then kept on `g`)."""
    if "request_body" in g:
        return g.request_body  # type: ignore[no-any-return]
    receipt = _start_receiving()
    try:
        data = _read_limited(receipt)
    finally:
        receipt.finish()
    g.request_body = data
    return data


def body_stream() -> IO[bytes]:
    """The request body as a stream for the pass-through, under the same three rules."""
    return _BodyStream(_start_receiving())  # type: ignore[return-value]


class _Receipt:
    """One body being received: its deadline and, once it is slow, its upload slot."""

    def __init__(self, slots: UploadSlots, caller: str, seconds: float) -> None:
        self.slots, self.caller, self.seconds = slots, caller, seconds
        self.done = False  # reading ended: no slot is taken any more
        self.holding = False  # this body holds one of the caller's upload slots
        self.refused = False  # it was slow while the caller's slots were all taken
        self.expired = False  # the deadline passed before the body was in
        self.complete = False  # the body was read to its end
        # The server reads the body in a loop of socket reads, so a timeout per read would never
        # fire on a steady trickle: a watchdog ends the reading side instead, first when the
        # body turns out slow with no slot free, else at the deadline. Both of Relay's workers
        # put the client socket there (relay_worker.py); outside gunicorn there is no deadline.
        self.sock: Any = request.environ.get("gunicorn.socket")
        self.grace = min(SLOW_AFTER, seconds)
        self.watchdog: Deadline | None = None
        self.stream = request.environ["wsgi.input"]
        self.length = request.content_length
        self.limit = int(current_app.config["MAX_CONTENT_LENGTH"])
        self.received = 0
        if self.length is not None and self.length > self.limit:
            self.finish()
            _close_connection()
            raise RequestTooLargeError(_too_large())
        if self.length is None and not request.environ.get("wsgi.input_terminated"):
            self.length = 0  # the server cannot end an unframed body: read none (werkzeug's rule)
        if self.sock is not None:
            self._watch(self.grace, self._slow)

    def _watch(self, seconds: float, action: Callable[[], None]) -> None:
        self.watchdog = _TIMERS.call_later(seconds, action)

    def _slow(self) -> None:
        if self.done:
            return
        if self.slots.acquire(self.caller):
            self.holding = True
            self._watch(self.seconds - self.grace, self._expire)
        else:
            self.refused = True
            self._stop_reading()

    def _expire(self) -> None:
        self.expired = True
        self._stop_reading()

    def _stop_reading(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)  # a read in progress returns at once

    def read(self, size: int) -> bytes:
        """Read up to `size` bytes before the deadline; b"" at the end of the body."""
        wanted = (self.length if self.length is not None else self.limit + 1) - self.received
        size = min(size if size >= 0 else CHUNK, wanted)
        if size <= 0:
            self.finish()
            self.complete = self.length is not None  # all of the Content-Length is in
            return b""
        try:
            chunk: bytes | None = self.stream.read(size)
        except OSError:  # NoMoreData, pywsgi's IOError: the client (or the watchdog) ended it
            chunk = None
        except ParseException:  # gunicorn's worker on a bad chunk size or trailer: not a 500
            chunk = None
        if self.refused or self.expired or chunk is None:
            self.finish()
            _close_connection()
            if self.refused:
                raise _too_many_uploads(self.slots.per_caller)
            if not self.expired:  # a chunked body cut short must not pass for a whole one
                raise InvalidRequestError("The request body was cut off.")
            raise RequestTimeoutError(
                f"The request body did not arrive within {_seconds()} seconds."
            )
        self.received += len(chunk)
        if self.received > self.limit:
            self.finish()
            _close_connection()
            raise RequestTooLargeError(_too_large())
        if not chunk:
            self.finish()
            self.complete = True
            if self.length is not None and self.received < self.length:
                _close_connection()
                raise InvalidRequestError("The request body ended before its Content-Length.")
        return chunk

    def finish(self) -> None:
        if not self.done:
            self.done = True
            if self.watchdog is not None:
                self.watchdog.cancel()
            if self.holding:
                self.slots.release(self.caller)


class _BodyStream:
    """A file-like view of a _Receipt, for code that streams the body on (requests)."""

    def __init__(self, receipt: _Receipt) -> None:
        self.receipt = receipt

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            return self.receipt.read(size)
        return b"".join(iter(lambda: self.receipt.read(CHUNK), b""))


def _read_limited(receipt: _Receipt) -> bytes:
    return b"".join(iter(lambda: receipt.read(CHUNK), b""))


def _start_receiving() -> _Receipt:
    slots: UploadSlots = current_app.extensions["relay_uploads"]
    receipt = _Receipt(slots, _caller(), current_app.extensions["relay"].settings.body_timeout)
    g.body_receipt = receipt  # released at teardown if the view never finished reading
    return receipt


def _too_many_uploads(per_caller: int) -> RateLimitError:
    return RateLimitError(
        f"Too many slow request bodies are being sent with this key at once (at most "
        f"{per_caller}); wait for one to finish.",
        code="too_many_uploads",
        retry_after=1,
    )


def _caller() -> str:
    key = g.get("api_key")
    if key is None or current_app.extensions["relay"].keys.open:
        return "address:" + (request.remote_addr or "")  # no keys: one count per client
    return "key:" + str(key.name)


def _seconds() -> str:
    return f"{current_app.extensions['relay'].settings.body_timeout:g}"


def _too_large() -> str:
    limit = request.max_content_length
    return f"The request body is larger than this gateway accepts ({limit} bytes)."


def _close_connection() -> None:
    g.close_connection = True


def _end_connection(response: Response) -> Response:
    """Close the connection after an answer given before the body was read to its end."""
    if not (g.get("close_connection") or _body_left_unread()):
        return response
    sock: Any = request.environ.get("gunicorn.socket")
    if server_connection.close_after_response() and sock is not None:
        response.call_on_close(lambda: _linger(sock))
    return response


def _body_left_unread() -> bool:
    # Refused before reading (no key, a rate limit): otherwise the server would read the rest of
    # the body, however slowly it comes, to find the next request on the connection.
    framed = (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    receipt = g.get("body_receipt")
    return framed and "request_body" not in g and (receipt is None or not receipt.complete)


def _linger(sock: socket.socket) -> None:
    # Once the answer is written: end our side, then read and drop what the client is still
    # sending for a moment before the server closes. Closing with unread bytes would reset the
    # connection, and the client could lose the answer (nginx's lingering_close, in short).
    end = time.monotonic() + LINGER_SECONDS
    with contextlib.suppress(OSError):  # a timeout included
        sock.shutdown(socket.SHUT_WR)
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(CHUNK):
                break


def _release(_error: BaseException | None) -> None:
    receipt = g.get("body_receipt")
    if receipt is not None:
        receipt.finish()


def register_request_bodies(app: Flask) -> None:
    settings = app.extensions["relay"].settings
    app.extensions["relay_uploads"] = UploadSlots(settings.max_uploads_per_key)
    app.after_request(_end_connection)
    app.teardown_request(_release)
