"""Wrap encoded SSE frames in a streaming response; keep streams alive while upstreams are silent.

Keep-alive writes `: keep-alive` every RELAY_KEEPALIVE_SECONDS of silence (see `_Pump`).
"""

from __future__ import annotations

import _thread
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Response
from loguru import logger
from werkzeug.wsgi import ClosingIterator

from blueprints.access_record import AccessRecord
from services.core import cutoff
from services.core.errors import GatewayError
from services.core.pipeline import Call, Streamed
from services.core.types import StreamStats

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

KEEPALIVE = b": keep-alive\n\n"
QUEUED = 8  # frames a pump reads ahead of a slow client


class _FramesResponse(Response):
    """A response whose body is encoded frames already: the WSGI server iterates them without
    werkzeug's encoding generator in between (one level less in a held stream, docs/design.md
    §4.6); closing it still runs its on-close callbacks (the access record, the key's slot).
    The body's `close()` runs twice (as the iterable, then from `Response.close`): it may."""

    def get_app_iter(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        body = super().get_app_iter(environ)
        return ClosingIterator(body, self.close) if body is self.response else body


def sse_response(frames: Iterator[bytes], mimetype: str = "text/event-stream") -> Response:
    # No Content-Length: gunicorn sends it chunked, frame by frame. X-Accel-Buffering stops
    # nginx from holding the stream back.
    return _FramesResponse(
        frames,
        mimetype=mimetype,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        direct_passthrough=True,
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

    started, body = start_stream(
        lambda: opened(stats), lambda e: failed(failing(e), stats), interval, keepalive, late
    )
    body.record = record
    if started is not None:
        record.took(started.backend, started.cache, route=started.route)
    else:
        record.took(call.backend.name)
    response = sse_response(body, mimetype)
    if started is not None:
        response.headers.update(started.headers)
    return response


def start_stream(
    start: Callable[[], Streamed[bytes]],
    fail: Callable[[GatewayError], Iterator[bytes]],
    interval: float,
    keepalive: bytes | None = KEEPALIVE,
    late: Callable[[Streamed[bytes]], None] = lambda outcome: None,
) -> tuple[Streamed[bytes] | None, _Body]:
    """Start a stream; keep it alive with comments while it is silent.

    Errors raised by `start` within `interval` are raised here, before any header is sent;
    later ones are rendered in-band by `fail`. The outcome is None when the stream had not
    started within `interval`. With `interval` 0 the stream runs inline, as it did.
    """
    if interval <= 0:
        started = start()
        return started, _Inline(started)
    pump = _Pump(start)
    first = pump.get(interval)
    if isinstance(first, BaseException):
        raise first
    head = first.outcome if isinstance(first, _Started) else None
    return head, _Relay(pump, first, fail, interval, keepalive, late)


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


class _Body:
    """The response body; notes on the access record a stream closed before its end (the
    client left).

    A plain iterator, not a generator over other iterators: while a stream is held its
    greenlet keeps a copy of the C stack of every nested generator and `__next__` it is in
    (docs/design.md §4.6), so the WSGI side is one level deep.
    """

    record: AccessRecord | None = None
    ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        # Runs before the response's on-close callbacks, which write the access record.
        if self.record is not None:
            self.record.abandoned = not self.ended


class _Inline(_Body):
    """A stream without keep-alive, read in the WSGI greenlet itself."""

    def __init__(self, outcome: Streamed[bytes]) -> None:
        self.outcome, self.frames = outcome, outcome.deltas

    def __next__(self) -> bytes:
        try:
            return next(self.frames)
        except StopIteration:
            self.ended = True
            self.outcome.close()
            raise

    def close(self) -> None:
        super().close()
        self.outcome.close()


class _Relay(_Body):
    """The frames the pump hands over, keep-alives in its silences; closing it stops the pump
    even if iteration never began."""

    def __init__(
        self,
        pump: _Pump,
        first: object,
        fail: Callable[[GatewayError], Iterator[bytes]],
        interval: float,
        keepalive: bytes | None,
        late: Callable[[Streamed[bytes]], None],
    ) -> None:
        self.pump, self.first, self.pending = pump, first, first
        self.fail, self.interval, self.keepalive, self.late = fail, interval, keepalive, late
        self.failed: Iterator[bytes] | None = None

    def __next__(self) -> bytes:
        while True:
            if self.failed is not None:  # the error frames of a stream that failed late
                try:
                    return next(self.failed)
                except StopIteration:
                    self._end()
                    raise
            item, self.pending = self.pending, None
            if item is None:
                item = self.pump.get(self.interval)
            if isinstance(item, bytes):
                return self.pump.more(item)
            if item is _SILENT:
                if self.keepalive:
                    return self.keepalive
            elif item is _END:
                self._end()
                raise StopIteration
            elif isinstance(item, _Started):
                if item is not self.first:
                    self.late(item.outcome)  # the stream started after the headers went out
            elif isinstance(item, GatewayError):  # the stream failed to start, headers are out
                self.failed = self.fail(item)
            elif isinstance(item, BaseException):
                logger.opt(exception=item).error("stream failed to start")
                self.failed = self.fail(GatewayError("Relay failed while streaming the reply."))

    def _end(self) -> None:
        self.ended = True
        self.pump.stop()

    def close(self) -> None:
        super().close()
        close = getattr(self.failed, "close", None)
        if close is not None:
            close()
        self.pump.stop()  # on the end of the stream, and when the client went away


class _Pump:
    """Run a stream's frames in a thread (a greenlet under gevent), handing them over a channel.

    Why a thread: the WSGI greenlet must wake up when the upstream has been silent for an
    interval, also before the first token (the pump primes the stream itself), and only
    standard-library `_thread`/`threading` may be used here (only wsgi.py imports gevent,
    docs/design.md §3.2); gunicorn's gevent worker patches them, so this is a greenlet and the
    waits are cooperative. A generator that is executing cannot be closed from outside, so when the
    client has gone the pump shuts the upstream sockets down (services/core/cutoff.py):
    the blocked read returns and the producer unwinds at once. A reply whose headers have not
    arrived yet cannot be cut; it ends when they come, or at the read timeout.

    Every open stream holds one pump, so it is kept small: a bare `_thread` start (no
    `threading.Thread`, whose start waits for the thread to run), a deque and two locks used as
    one-slot signals (no `queue.Queue`: three conditions, and a new lock for every timed wait).
    `ready` is held while the consumer has nothing to be woken for, `room` while the producer
    has no reason to look again; each is released by the other side only.
    """

    __slots__ = ("items", "ready", "room", "stopped", "upstreams", "running", "start")

    def __init__(self, start: Callable[[], Streamed[bytes]]) -> None:
        # Handed over as an attribute, not as the thread's argument, which gevent keeps until
        # the thread ends: `start` holds the parsed request, needed only until it has run.
        self.start: Callable[[], Streamed[bytes]] | None = start
        self.items: deque[object] = deque()
        self.ready, self.room = threading.Lock(), threading.Lock()
        self.ready.acquire()
        self.room.acquire()
        self.stopped = False
        self.upstreams = cutoff.Watch()
        self.running = True
        _thread.start_new_thread(self._run, ())

    def get(self, timeout: float) -> object:
        items = self.items
        if not items:
            self.ready.acquire(blocking=False)  # a wake-up for an item taken already
            if not items and not self.ready.acquire(timeout=timeout):
                return _SILENT
        item = items.popleft()
        if self.room.locked():
            self.room.release()
        return item

    def more(self, frame: bytes) -> bytes:
        """The frame with those queued right behind it: one write to the client for what the
        upstream sent at once (fewer sends and switches), the same bytes."""
        items = self.items
        if not items or type(items[0]) is not bytes:
            return frame
        frames = [frame]
        while items and type(items[0]) is bytes:
            frames.append(items.popleft())  # type: ignore[arg-type]
        if self.room.locked():
            self.room.release()
        return b"".join(frames)

    def stop(self) -> None:
        self.stopped = True
        if self.running:
            cutoff.cut(self.upstreams)
        self.items.clear()
        if self.room.locked():  # free a producer waiting for room; it sees `stopped` next
            self.room.release()

    def _put(self, item: object) -> bool:
        while len(self.items) >= QUEUED and not self.stopped:  # backpressure on the upstream
            self.room.acquire()
        if self.stopped:
            return False
        self.items.append(item)
        if self.ready.locked():
            self.ready.release()
        return True

    def _run(self) -> None:
        cutoff.watch(self.upstreams)
        start, self.start = self.start, None
        outcome: Streamed[bytes] | None = None
        try:
            assert start is not None
            outcome = start()
            del start  # it holds the request: not for the whole stream (docs/design.md §4.6)
            if self._put(_Started(outcome)):
                for frame in outcome.deltas:
                    if not self._put(frame):
                        return
                outcome.close()  # the upstream is released before the client has read all
                self._put(_END)
        except BaseException as e:  # handed to the WSGI greenlet, which renders or raises it
            self._put(e)
        finally:
            self.running = False
            if outcome is not None:
                outcome.close()
