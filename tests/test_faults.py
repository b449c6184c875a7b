"""The fault suite: upstreams that refuse, reset, hang or talk nonsense; slow and vanishing clients.

One gateway under gunicorn serves four backends (RELAY_CONFIG): a fake Ollama that answers any
model, a port nobody listens on, a raw server that resets mid-stream, and the fake again with a
1 s read timeout. Everything is observed from outside: HTTP answers, the fake's counters, and
the worker's sockets and memory in /proc (tests/observe.py). The long soak is bench/soak.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import API_KEY, Gateway, free_port, wait_until
from tests.fakes.ollama import Script, go_json
from tests.fakes.ollama_faults import AnyModelOllama, RawUpstream
from tests.observe import rss_kib, upstream_sockets, worker_pids
from tests.stream_clients import (
    events,
    finished_cleanly,
    last_data,
    open_raw,
    quiet,
    read_body,
    read_until,
    storm,
    vanish,
)

USER = [{"role": "user", "content": "Hi"}]
KEEPALIVE = 0.3


@pytest.fixture(scope="module")
def upstream_fake() -> Iterator[AnyModelOllama]:
    fake = AnyModelOllama()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def resetting() -> Iterator[RawUpstream]:
    line = go_json({"model": "m", "message": {"role": "assistant", "content": "partial"}})
    raw = RawUpstream([line + b"\n"])
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def fgw(start_module_gateway, upstream_fake, resetting, tmp_path_factory) -> Gateway:
    config = tmp_path_factory.mktemp("faults") / "relay.toml"
    config.write_text(
        f"""
[backends.refused]
url = "http://127.0.0.1:{free_port()}"
models = ["refused*"]

[backends.resetting]
url = "{resetting.url}"
models = ["reset*"]

[backends.slow]
url = "{upstream_fake.url}"
models = ["hang*"]
read_timeout = 1

[backends.ollama]
url = "{upstream_fake.url}"
models = ["*"]
"""
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "RELAY_KEEPALIVE_SECONDS": str(KEEPALIVE),
        "RELAY_CACHE_TTL": "0",  # every request must reach the upstream
        "LOG_LEVEL": "warn",
    }
    return start_module_gateway(env)  # type: ignore[no-any-return]


@pytest.fixture
def fake(upstream_fake: AnyModelOllama) -> Iterator[AnyModelOllama]:
    upstream_fake.reset()
    yield upstream_fake
    upstream_fake.reset()  # ends every silence the test left


# --- clients --------------------------------------------------------------------------------


def post(gw: Gateway, model: str, stream: bool = True, path: str = "/v1/chat/completions"):
    body: dict = {"model": model, "stream": stream}
    body.update({"input": "Hi"} if path == "/v1/responses" else {"messages": USER})
    return requests.post(
        gw.url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=20
    )


def assert_error_envelope(resp: requests.Response, status: int, backend: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert f"'{backend}'" in error["message"] and "127.0.0.1" not in error["message"]
    return error  # type: ignore[no-any-return]


def worker(gw: Gateway) -> int:
    (pid,) = worker_pids(gw.proc.pid)
    return pid


# --- upstream faults ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
@pytest.mark.parametrize("stream", [True, False])
def test_refused_connection_is_a_503_before_any_byte(fgw, path, stream):
    error = assert_error_envelope(post(fgw, "refused-1", stream, path), 503, "refused")
    assert error["code"] == "backend_unavailable"


def test_reset_mid_stream_ends_with_one_error_frame(fgw):
    raw = post(fgw, "reset-1").text
    data = [e.split("data: ", 1)[1] for e in events(raw)]
    assert "[DONE]" not in data
    assert json.loads(data[1])["choices"][0]["delta"] == {"content": "partial"}
    assert "dropped the connection" in json.loads(data[-1])["error"]["message"]
    raw = post(fgw, "reset-1", path="/v1/responses").text
    assert events(raw)[-1].startswith("event: response.failed")


@pytest.mark.parametrize("before_headers", [True, False])
def test_upstream_hanging_past_the_read_timeout(fgw, fake: AnyModelOllama, before_headers):
    fake.silent("hang-1", before_headers=before_headers)
    error = assert_error_envelope(post(fgw, "hang-1", stream=False), 504, "slow")
    assert error["type"] == "timeout_error"
    # Streamed, the silence outlasts the keep-alive interval: headers and comments are out
    # before the timeout, which then arrives as the in-band error frame.
    resp = post(fgw, "hang-1")
    assert resp.status_code == 200 and resp.text.startswith(": keep-alive\n\n")
    error = json.loads(last_data(resp.text))["error"]
    assert error["code"] == "backend_timeout" and "'slow'" in error["message"]
    resp = post(fgw, "hang-1", path="/v1/responses")
    failed = json.loads(last_data(resp.text))
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["code"] == "backend_timeout"


@pytest.mark.parametrize(
    "script",
    [
        Script(status=200, raw_body=b"<html><body>Welcome to nginx</body></html>"),
        Script(status=502, raw_body=b"<html><h1>502 Bad Gateway</h1></html>"),
        Script(status=200, raw_body=b"Ollama is running", raw_content_type="text/plain"),
    ],
    ids=["html-200", "html-error-page", "plain-text"],
)
@pytest.mark.parametrize("stream", [True, False])
def test_non_json_replies_are_a_clean_502(fgw, fake: AnyModelOllama, script, stream):
    fake.scripts["page"] = script
    for path in ("/v1/chat/completions", "/v1/responses"):
        resp = post(fgw, "page", stream, path)
        error = assert_error_envelope(resp, 502, "ollama")
        assert "<" not in error["message"] and "nginx" not in error["message"]


def test_truncated_ndjson_line_ends_the_stream_with_an_error(fgw, fake: AnyModelOllama):
    fake.script("cut", content=["partial"], garbage_line=True)
    raw = post(fgw, "cut").text
    assert "malformed" in json.loads(last_data(raw))["error"]["message"]
    assert "[DONE]" not in raw
    raw = post(fgw, "cut", path="/v1/responses").text
    assert json.loads(last_data(raw))["type"] == "response.failed"


# --- keep-alive -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/completions"])
def test_keepalive_comments_flow_before_the_first_token(fgw, fake: AnyModelOllama, path):
    thinking = fake.silent("thinker", content=["Deep", " thought"])
    body = {"model": "thinker", "stream": True}
    body.update(
        {"input": "Hi"}
        if path == "/v1/responses"
        else {"prompt": "Hi"}
        if path == "/v1/completions"
        else {"messages": USER}
    )
    with requests.post(
        fgw.url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, stream=True
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        chunks = resp.iter_content(chunk_size=None)
        got = b""
        while got.count(b": keep-alive\n\n") < 2:
            got += next(chunks)
        assert got == b": keep-alive\n\n" * got.count(b": keep-alive\n\n")  # nothing else yet
        thinking.speak.set()
        raw = (got + b"".join(chunks)).decode()
    if path == "/v1/responses":
        assert json.loads(last_data(raw))["response"]["output_text"] == "Deep thought"
    elif path == "/v1/completions":
        assert last_data(raw) == "[DONE]"
        chunks = [json.loads(e[6:]) for e in events(raw)[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Deep thought"
    else:
        assert last_data(raw) == "[DONE]"
        deltas = [json.loads(e[6:])["choices"][0]["delta"] for e in events(raw)[:-1]]
        assert "".join(d.get("content", "") for d in deltas) == "Deep thought"


def test_vanished_client_during_a_silence_closes_the_upstream_at_once(fgw, fake: AnyModelOllama):
    thinking = fake.silent("thinker")
    pid = worker(fgw)
    sock = open_raw(fgw, "thinker")
    read_until(sock, b": keep-alive")
    assert upstream_sockets(pid, fake._server.port) == 1
    vanish(sock)
    # Noticed at the next comment; the upstream socket goes while the model still "thinks".
    wait_until(lambda: upstream_sockets(pid, fake._server.port) == 0)
    assert not thinking.speak.is_set() and fake.running == 1
    thinking.speak.set()
    wait_until(lambda: fake.running == 0)


# --- clients: slow, and many vanishing ------------------------------------------------------


def test_a_client_that_does_not_read_does_not_hold_up_other_streams(fgw, fake: AnyModelOllama):
    fake.script("big", content=["x" * 4096] * 500)  # ~2 MB of frames
    slow = open_raw(fgw, "big", rcvbuf=4096)
    started = read_until(slow, b"data: ")  # it has started, then the client stops reading
    for _ in range(3):
        assert last_data(post(fgw, "llama3.2").text) == "[DONE]"
    body = read_body(slow, started)  # the slow client still gets all of it, in order
    assert body.endswith("data: [DONE]\n\n")
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events(body)[:-1]
    )
    assert text == "x" * 4096 * 500


def test_200_streams_with_half_the_clients_vanishing_leave_nothing_behind(
    fgw, fake: AnyModelOllama
):
    fake.script("llama3.2", content=[f"t{i} " for i in range(30)], pace=0.01)
    pid = worker(fgw)
    rounds = []
    for seed in range(3):  # the first round warms the worker up; memory is measured after it
        results = storm(fgw, 200, seed)
        quiet(fgw, fake, pid)
        rounds.append(rss_kib(pid))
        assert 50 < finished_cleanly(results) < 150
    assert rounds[-1] - rounds[0] < 10 * 1024, rounds  # KiB: no growth round over round
    metrics = requests.get(fgw.url + "/metrics", timeout=5).text
    assert "relay_streams_in_flight 0.0" in metrics
    assert "Traceback" not in fgw.logs()
