"""Loopback servers for the guarded-fetcher tests: they count every connection they accept.

A refused URL must be refused before any connection, so these servers record each accepted
socket (not only whole requests) and the Host header of each request.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.files import FakeFiles

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 8


class CountingFiles(FakeFiles):
    """A static file server that also answers redirects and counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.seen: list[tuple[str, str]] = []  # (Host header, path) of each request
        self.redirects: dict[str, str] = {}
        self._lock = threading.Lock()
        super().__init__()
        self.port = self._server.port
        server = self._server.server
        accept = server.verify_request

        def counted(request: Any, client_address: Any) -> bool:
            with self._lock:
                self.connections += 1
            return bool(accept(request, client_address))

        server.verify_request = counted  # type: ignore[method-assign]

    def redirect(self, name: str, location: str) -> str:
        self.redirects[name] = location
        return f"{self.url}/{name}"

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.seen.append((request.headers.get("Host", ""), request.path))
        name = request.path.lstrip("/")
        if name in self.redirects:
            response = Response("", status=302, headers={"Location": self.redirects[name]})
            return response(environ, start_response)
        return super().wsgi(environ, start_response)

    def reset(self) -> None:
        with self._lock:
            self.connections = 0
            self.seen.clear()
