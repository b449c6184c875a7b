"""Let the code that runs a stream cut its upstream replies short from another greenlet.

A stream's frames may be produced in a greenlet of their own (the keep-alive pump in
blueprints/streaming.py). When the client goes away while that greenlet waits on a silent
upstream, closing the generator is impossible (it is executing), so the pump shuts the
upstream sockets down instead: the blocked read returns at once and the generator unwinds,
closing the reply as usual. Only replies opened in a context that called `watch()` are kept.
"""

from __future__ import annotations

import contextlib
import socket
from contextvars import ContextVar

import requests


class Watch:
    """The streamed replies one stream opened; once cut, later ones are cut as they open."""

    def __init__(self) -> None:
        self.replies: list[requests.Response] = []
        self.is_cut = False


_WATCHED: ContextVar[Watch | None] = ContextVar("relay_upstreams", default=None)


def watch(replies: Watch) -> None:
    """Record every streamed reply this context (thread or greenlet) opens from now on."""
    _WATCHED.set(replies)


def opened(reply: requests.Response) -> None:
    watched = _WATCHED.get()
    if watched is not None:
        watched.replies.append(reply)
        if watched.is_cut:  # the client left while this request waited (queue, retry, ...)
            _shut(reply)


def cut(replies: Watch) -> None:
    """Shut down the sockets of replies still being read, and of any opened from now on."""
    replies.is_cut = True
    for reply in replies.replies:
        _shut(reply)


def _shut(reply: requests.Response) -> None:
    sock = _socket_of(reply)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _socket_of(reply: requests.Response) -> socket.socket | None:
    # While a reply is being read, its socket hangs off the connection (keep-alive) or, when
    # the server said Connection: close, only off http.client's file object. Both let go of
    # it when the reply ends or goes back to the pool, so a socket that now serves another
    # request is never found here.
    connection = getattr(reply.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        fp = getattr(getattr(reply.raw, "_fp", None), "fp", None)  # http.client -> BufferedReader
        sock = getattr(getattr(fp, "raw", None), "_sock", None)  # -> SocketIO -> socket
    return sock if isinstance(sock, socket.socket) else None
