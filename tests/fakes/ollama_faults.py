"""Fault-injecting variants of the fake Ollama, and a raw TCP upstream that misbehaves on cue.

`AnyModelOllama` answers every model name, so fuzzed requests reach the translation code, and
counts the connections it holds open, so tests can see that Relay closed every one.
`RawUpstream` speaks just enough HTTP to reset a connection in the middle of a stream.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.ollama import EMBED_DIMENSIONS, FakeOllama, Script


@dataclass
class SilentScript(Script):
    """A reply that stays silent until `speak` is set (at the latest when the test ends)."""

    speak: threading.Event = field(default_factory=threading.Event)
    before_headers: bool = False  # silent before sending even the response headers


class AnyModelOllama(FakeOllama):
    """A fake Ollama where every model exists; it counts open connections and running replies."""

    def __init__(self, port: int = 0) -> None:
        self.open_connections = 0
        self.running = 0  # chat replies still being written
        self._count_lock = threading.Lock()
        super().__init__(port=port, record=False)
        server = self._server.server
        server.socket.listen(4096)  # a storm of streams connects at once
        handle = server.finish_request

        def finish_request(request: Any, client_address: Any) -> None:
            self._count(open_connections=1)
            try:
                handle(request, client_address)
            finally:
                self._count(open_connections=-1)

        server.finish_request = finish_request  # type: ignore[method-assign]

    def _count(self, **changes: int) -> None:
        with self._count_lock:
            for name, change in changes.items():
                setattr(self, name, getattr(self, name) + change)

    def silent(self, model: str, **kw: Any) -> SilentScript:
        """Script `model` to go silent (see SilentScript); `reset()` ends every silence."""
        self.scripts[model] = script = SilentScript(**kw)
        return script

    def reset(self) -> None:
        for script in list(self.scripts.values()):
            if isinstance(script, SilentScript):
                script.speak.set()
        super().reset()

    def lookup(self, model: str) -> Script | None:
        return self.scripts.get(model) or self.scripts.get("*") or Script()

    def embed(self, body: Any) -> Any:
        # A model has only so many dimensions: fuzzed requests ask for billions, which the
        # plain fake would try to build in memory (it was OOM-killed at 24 GB).
        if isinstance(body, dict) and isinstance(body.get("dimensions"), int):
            body = {**body, "dimensions": max(1, min(body["dimensions"], EMBED_DIMENSIONS))}
        return super().embed(body)

    def whole(self, model: str, script: Script) -> dict[str, Any]:
        if isinstance(script, SilentScript):
            script.speak.wait(60)
        return super().whole(model, script)

    def generate_stream(self, model: str, script: Script, final: dict[str, Any]) -> Any:
        if isinstance(script, SilentScript):
            yield b""  # werkzeug sends the headers on the first write
            script.speak.wait(60)
        yield from super().generate_stream(model, script, final)

    def stream(self, model: str, script: Script) -> Any:
        self._count(running=1)
        try:
            if isinstance(script, SilentScript):
                if not script.before_headers:
                    yield b""  # werkzeug sends the headers on the first write
                script.speak.wait(60)
            yield from super().stream(model, script)
        finally:
            self._count(running=-1)


class RawUpstream:
    """A TCP server that answers /api/chat with HTTP headers, `lines`, then a reset (RST)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            if b"/api/chat" not in data.split(b"\r\n", 1)[0]:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for line in self.lines:
                conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        # Shut down before closing: a thread left in accept() on a closed socket can take the
        # connections of the next server given the same descriptor number (another test's fake).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.sock.close()
