"""Serve a WSGI app on 127.0.0.1 in a background thread, for the length of a test session."""

from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as real servers do

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


class ServerThread:
    def __init__(self, app: object, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = make_server(
            host,
            port,
            app,
            threaded=True,  # type: ignore[arg-type]
            request_handler=_QuietHandler,
        )
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
