"""The fake Ollama of the tests, served by gevent's WSGI server for benchmarks.

The test suite serves the fake with werkzeug's threaded server, which closes every connection
and tops out early; a benchmark needs an upstream that is never the bottleneck, so here the
same app runs under gevent (keep-alive, thousands of concurrent streams).

    python -m bench.fake_upstream PORT [--tokens N] [--pace SECONDS]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
from typing import Any  # noqa: E402

from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

from tests.fakes.ollama import FakeOllama  # noqa: E402

CONNECTIONS = [0]  # connections accepted so far: GET /connections (the tests' reuse check)


class _NoDelayHandler(WSGIHandler):
    def handle(self) -> None:
        CONNECTIONS[0] += 1
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()


class _Quiet:
    def write(self, _data: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--pace", type=float, default=0.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fake = FakeOllama(record=False, serve=False)
    fake.script("llama3.2", content=["tok "] * args.tokens, pace=args.pace)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Go's net/http (Ollama) disables Nagle's algorithm; without it, a response written in two
    # pieces waits for the client's delayed ACK (~40 ms).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(2048)

    def app(environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/connections":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(CONNECTIONS[0]).encode()]
        return fake.wsgi(environ, start_response)

    WSGIServer(
        listener, app, log=None, error_log=_Quiet(), handler_class=_NoDelayHandler
    ).serve_forever()


if __name__ == "__main__":
    main()
