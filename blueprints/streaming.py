"""Wrap encoded SSE frames in a streaming response; keep streams alive while upstreams are silent.

Keep-alive writes `: keep-alive` every RELAY_KEEPALIVE_SECONDS of silence (see `_Pump`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response
from loguru import logger

from blueprints.access_record import AccessRecord
from services.core import cutoff
from services.core.errors import GatewayError
from services.core.pipeline import Call, Streamed
from services.core.types import StreamStats

KEEPALIVE = b": keep-alive\n\n"


def sse_response(frames: Iterator[bytes], mimetype: str = "text/event-stream") -> Response:
    # No Content-Length: gunicorn sends it chunked, frame by frame. X-Accel-Buffering stops
    # nginx from holding the stream back.
    return Response(
        frames,
        mimetype=mimetype,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


Opened = Callable[[StreamStats], Streamed[bytes]]  # opens a stream: the core's, framed


def stream_reply(
    record: AccessRecord,
    call: Call,
    opened: Opened,
    failed: Callable[[Iterator[Any], StreamStats], Iterator[bytes]],
    interval: float,
    *,
    keepalive: bytes | None = KEEPALIVE,
    mimetype: str = "text/event-stream",
) -> Response:
    """The one way a view streams: keep-alive, priming, cut-off, and the access record.

    Each face says what it writes during silences (`keepalive`: an SSE comment by default, a
    face's own ping event, or None to stay silent, as NDJSON clients expect) and its media type.

    `opened` runs the core and frames its deltas (in the pump under keep-alive); `failed`
    frames a stream that failed after the headers went out. The outcome's backend, cache
    status and headers reach the record and the response when the stream started within
    `interval`; a stream still queued then has sent its headers already, so only `backend`
    (the call's: the route was resolved once, before) is known (docs/design.md §4.4).
    """
    stats = record.stats = StreamStats()

    def late(outcome: Streamed[bytes]) -> None:
        # Started after the headers went out: the record still names what answered.
        record.backend, record.route = outcome.backend, outcome.route

    started, frames = start_stream(
        lambda: opened(stats), lambda e: failed(failing(e), stats), interval, keepalive, late
    )
    if started is not None:
        record.took(started.backend, started.cache, route=started.route)
    else:
        record.took(call.backend.name)
    response = sse_response(_Watched(frames, record), mimetype)
    if started is not None:
        response.headers.update(started.headers)
    return response


class _Watched:
    """The response body, noting on the record a stream closed before its end: the client left."""

    def __init__(self, frames: Iterator[bytes], record: AccessRecord) -> None:
        self.frames, self.record, self.ended = frames, record, False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.frames)
        except StopIteration:
            self.ended = True
            raise

    def close(self) -> None:
        # Runs before the response's on-close callbacks, which write the access record.
        self.record.abandoned = not self.ended
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()


def start_stream(
    start: Callable[[], Streamed[bytes]],
    fail: Callable[[GatewayError], Iterator[bytes]],
    interval: float,
    keepalive: bytes | None = KEEPALIVE,
    late: Callable[[Streamed[bytes]], None] = lambda outcome: None,
) -> tuple[Streamed[bytes] | None, Iterator[bytes]]:
    """Start a stream; keep it alive with comments while it is silent.

    Errors raised by `start` within `interval` are raised here, before any header is sent;
    later ones are rendered in-band by `fail`. The outcome is None when the stream had not
    started within `interval`. With `interval` 0 the stream runs inline, as it did.
    """
    if interval <= 0:
        started = start()
        return started, started.deltas
    pump = _Pump(start)
    first = pump.get(interval)
    if isinstance(first, BaseException):
        raise first
    head = first.outcome if isinstance(first, _Started) else None
    return head, _Relay(pump, _relay(pump, first, fail, interval, keepalive, late))


def failing(error: GatewayError) -> Iterator[Any]:
    """A stream of deltas that fails at once, for a renderer to turn into its error frames."""
    raise error
    yield  # noqa: B901 - makes this a generator


_END, _SILENT = object(), object()


class _Started:
    """The pump's first item: the core's outcome, handed to the WSGI greenlet over the queue."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Streamed[bytes]) -> None:
        self.outcome = outcome


class _Relay:
    """The response body; closing it stops the pump even if iteration never began."""

    def __init__(self, pump: _Pump, frames: Iterator[bytes]) -> None:
        self.pump, self.frames = pump, frames

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.frames)

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()
        self.pump.stop()


def _relay(
    pump: _Pump,
    first: object,
    fail: Callable[[GatewayError], Iterator[bytes]],
    interval: float,
    keepalive: bytes | None,
    late: Callable[[Streamed[bytes]], None],
) -> Iterator[bytes]:
    try:
        item = first
        while item is not _END:
            if isinstance(item, _Started) and item is not first:
                late(item.outcome)  # the stream started after the headers went out
            elif item is _SILENT:
                if keepalive:
                    yield keepalive
            elif isinstance(item, GatewayError):  # the stream failed to start, headers are out
                yield from fail(item)
                return
            elif isinstance(item, BaseException):
                logger.opt(exception=item).error("stream failed to start")
                yield from fail(GatewayError("Relay failed while streaming the reply."))
                return
            elif isinstance(item, bytes):
                yield item
            item = pump.get(interval)
    finally:
        pump.stop()  # on the end of the stream, and when the client went away


class _Pump:
    """Run a stream's frames in a thread (a greenlet under gevent), handing them over a queue.

    Why a thread: the WSGI greenlet must wake up when the upstream has been silent for an
    interval, also before the first token (the pump primes the stream itself), and only
    standard-library `threading`/`queue` may be used here (only wsgi.py imports gevent,
    docs/design.md §3.2); gunicorn's gevent worker patches them, so this is a greenlet and the
    waits are cooperative. A generator that is executing cannot be closed from outside, so when the
    client has gone the pump shuts the upstream sockets down (services/core/cutoff.py):
    the blocked read returns and the producer unwinds at once. A reply whose headers have not
    arrived yet cannot be cut; it ends when they come, or at the read timeout.
    """

    def __init__(self, start: Callable[[], Streamed[bytes]]) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=8)  # backpressure on the upstream
        self.stopped = threading.Event()
        self.upstreams = cutoff.Watch()
        self.thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self.thread.start()

    def get(self, timeout: float) -> object:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return _SILENT

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            cutoff.cut(self.upstreams)
        while True:  # free a producer blocked on a full queue; it sees `stopped` next
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def _put(self, item: object) -> bool:
        if self.stopped.is_set():
            return False
        self.queue.put(item)
        return True

    def _run(self, start: Callable[[], Streamed[bytes]]) -> None:
        cutoff.watch(self.upstreams)
        frames: Iterator[bytes] | None = None
        try:
            outcome = start()
            frames = outcome.deltas
            if self._put(_Started(outcome)):
                for frame in frames:
                    if not self._put(frame):
                        return
                self._put(_END)
        except BaseException as e:  # handed to the WSGI greenlet, which renders or raises it
            self._put(e)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
