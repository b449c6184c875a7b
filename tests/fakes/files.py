"""A tiny static file server on loopback, standing in for images on the web."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.server import ServerThread


class FakeFiles:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self._server = ServerThread(self.wsgi)
        self.url = self._server.url

    def add(self, name: str, data: bytes, content_type: str) -> str:
        self.files[name] = (data, content_type)
        return f"{self.url}/{name}"

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        name = Request(environ).path.lstrip("/")
        if name not in self.files:
            return Response("not found", status=404)(environ, start_response)
        data, kind = self.files[name]
        return Response(data, content_type=kind)(environ, start_response)

    def close(self) -> None:
        self._server.close()
