"""Streams reuse the worker's upstream connections (docs/development.md "Before and after, side
by side"): a stream that ended goes back to the pool instead of costing the next one a connect
and a name lookup. The tests' fakes close every connection, so this uses the benchmark's
keep-alive fake Ollama (bench/fake_upstream.py), which counts the connections it accepted."""

from __future__ import annotations

import subprocess
import sys

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
