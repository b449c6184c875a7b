"""Streams reuse the worker's upstream connections (docs/development.md "Before and after, side
by side"): a stream that ended goes back to the pool instead of costing the next one a connect
and a name lookup. The tests' fakes close every connection, so this uses the benchmark's
keep-alive fake Ollama (bench/fake_upstream.py), which counts the connections it accepted."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import API_KEY, ROOT, ServerProcess, free_port


class KeepAliveOllama(ServerProcess):
    def __init__(self, log_path):  # type: ignore[no-untyped-def]
        super().__init__(log_path)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_upstream", str(port), "--tokens", "4"],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def connections(self) -> int:
        return int(requests.get(self.url + "/connections", timeout=5).text)


HI = [{"role": "user", "content": "Hi"}]
# Every face's stream, and how its end looks: each must give its connection back, also the
# Anthropic face, which stops reading at the reply's last delta (message_stop).
FACES = [
    ("/v1/chat/completions", {"stream": True}, "data:[DONE]"),
    ("/v1/messages", {"stream": True, "max_tokens": 16}, '{"type":"message_stop"}'),
    ("/api/chat", {}, '"done":true'),
]


@pytest.mark.parametrize(("path", "extra", "end"), FACES)
def test_streams_one_after_another_reuse_one_upstream_connection(
    start_gateway, tmp_path, path, extra, end
):
    upstream = KeepAliveOllama(tmp_path / "fake.log")
    try:
        upstream.wait_answering("/api/version", 20.0, step=0.05)
        gw = start_gateway({"OLLAMA_BASE_URL": upstream.url, "RELAY_API_KEYS": API_KEY})
        before = upstream.connections()  # our own checks, one connection each
        body = {"model": "llama3.2", "messages": HI, **extra}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for _ in range(6):
            with requests.post(
                gw.url + path, json=body, headers=headers, stream=True, timeout=10
            ) as r:
                assert r.status_code == 200
                text = r.text
            assert "tok" in text, text  # the fake's reply came through
            assert end in text.replace(" ", ""), text[-300:]
        # Each stream used to open its own connection; now one (two with a start-up check).
        opened = upstream.connections() - before - 1  # minus this call's own connection
        assert opened <= 2, opened
    finally:
        upstream.stop()


class ClosesIdleConnections:
    """An Ollama that answers with keep-alive and then closes the connection, as a server with
    a short idle timeout does: a pooled connection is dead by the time it is reused."""

    REPLY = json.dumps(
        {"model": "llama3.2", "message": {"role": "assistant", "content": "fresh"}, "done": True}
    ).encode()

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # shut down: the test is over
                return
            self.accepted += 1
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            if not (more := conn.recv(65536)):
                return
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        while length and len(body) < int(length[1]):
            if not (more := conn.recv(65536)):
                return
            body += more
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(self.REPLY), self.REPLY)
        )

    def close(self) -> None:
        # Shut down before closing: a thread blocked in accept() on a closed socket would stay
        # there, and its descriptor number may serve another test's server next.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.listener.close()
        assert not self.thread.is_alive()


def test_an_upstream_that_closed_an_idle_connection_costs_no_request(start_gateway):
    upstream = ClosesIdleConnections()
    try:
        gw = start_gateway({"OLLAMA_BASE_URL": upstream.url, "RELAY_API_KEYS": API_KEY})
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"model": "llama3.2", "messages": HI}
        before = upstream.accepted
        for _ in range(5):
            time.sleep(0.05)  # the upstream's close has arrived before the next request
            r = requests.post(
                gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "fresh"
        # The pool saw each closed connection and opened a new one rather than sending on it.
        assert upstream.accepted - before == 5
    finally:
        upstream.close()
