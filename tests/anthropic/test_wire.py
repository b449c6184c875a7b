"""The Anthropic face byte by byte: SSE framing and event order, the error envelope and its
headers, validation naming the caller's fields, and the probe Claude Code sends first."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.anthropic.conftest import HEADERS, names, post, sse_events, user
from tests.conftest import API_KEY
from tests.fakes.ollama import FakeOllama

BASIC = {"model": "llama3.2", "max_tokens": 50, "messages": user("Hi")}


def stream(gateway, body, **kw) -> tuple[requests.Response, list]:
    r = post(gateway.url + "/v1/messages?beta=true", {**body, "stream": True}, **kw)
    return r, sse_events(r.content) if r.status_code == 200 else []


def test_text_stream_order_and_framing(gateway, ollama: FakeOllama):
    r, events = stream(gateway, BASIC)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"] == r.headers["X-Request-ID"]
    assert r.headers["Cache-Control"] == "no-cache"
    assert names(events) == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (
        start["id"].startswith("msg_") and start["content"] == [] and start["model"] == "llama3.2"
    )
    assert start["stop_reason"] is None and start["usage"]["output_tokens"] == 0
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 12,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert r.content.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_thinking_text_and_tools_in_order(gateway, ollama: FakeOllama):
    ollama.script(
        "qwen3",
        thinking=["Hm", "m."],
        content=["Checking."],
        tool_calls=[{"name": "get_weather", "arguments": {"city": "Tokyo"}}],
    )
    r, events = stream(gateway, {**BASIC, "model": "qwen3"})
    assert names(events) == [
        "message_start",
        "content_block_start",  # 0 thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",  # the (empty) signature
        "content_block_stop",
        "content_block_start",  # 1 text
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2 tool_use
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    blocks = [d for n, d in events if n.startswith("content_block")]
    assert [b["index"] for b in blocks] == [0] * 5 + [1] * 3 + [2] * 3
    assert blocks[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert blocks[1]["delta"] == {"type": "thinking_delta", "thinking": "Hm"}
    assert blocks[3]["delta"] == {"type": "signature_delta", "signature": ""}
    tool = blocks[8]["content_block"]
    assert tool["type"] == "tool_use" and tool["id"].startswith("toolu_") and tool["input"] == {}
    assert blocks[9]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": "Tokyo"}'}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_mid_stream_failure_is_one_error_event(gateway, ollama: FakeOllama):
    ollama.script("llama3.2", midstream_error="model runner has unexpectedly stopped")
    r, events = stream(gateway, BASIC)
    assert r.status_code == 200
    assert names(events)[-1] == "error" and "message_stop" not in names(events)
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "unexpectedly stopped" in events[-1][1]["error"]["message"]
    ollama.script("llama3.2", truncate=True)
    r, events = stream(gateway, BASIC)
    assert names(events)[-1] == "error"


def test_silence_is_filled_with_ping_events(start_gateway, fake_ollama, ollama: FakeOllama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_KEEPALIVE_SECONDS": "0.2",
        }
    )
    ollama.script("llama3.2", headers_delay=0.7, content=["a", "b"], pace=0.5)
    r, events = stream(gw, BASIC)
    all_names = [n for n, _ in events]
    assert "ping" in all_names and b": keep-alive" not in r.content
    assert [d for n, d in events if n == "ping"][0] == {"type": "ping"}
    assert names(events)[0] == "message_start" and names(events)[-1] == "message_stop"


def test_client_leaving_stops_the_upstream(gateway, ollama: FakeOllama):
    ollama.script("llama3.2", content=["x"] * 200, pace=0.05)
    with requests.post(
        gateway.url + "/v1/messages",
        json={**BASIC, "stream": True},
        headers=HEADERS,
        stream=True,
        timeout=10,
    ) as r:
        lines = r.iter_lines()
        for _ in range(8):
            next(lines)
    deadline = time.monotonic() + 5
    while not ollama.disconnects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ollama.disconnects and ollama.disconnects[0][0] == "llama3.2"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "llama3.2", "messages": user("x")}, 400, "max_tokens"),
        ({"model": "llama3.2", "max_tokens": 0, "messages": user("x")}, 400, "max_tokens"),
        ({"max_tokens": 5, "messages": user("x")}, 400, "model"),
        ({"model": "llama3.2", "max_tokens": 5}, 400, "messages"),
        (
            {"model": "llama3.2", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            400,
            "messages.0.role",
        ),
        (
            {
                "model": "llama3.2",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x"},
                            {"type": "image", "source": {"type": "file", "file_id": "f"}},
                        ],
                    }
                ],
            },
            400,
            "messages.0.content.1.source.type",
        ),
        (
            {
                "model": "llama3.2",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/tiff",
                                    "data": "AA",
                                },
                            }
                        ],
                    }
                ],
            },
            400,
            "messages.0.content.0.source.media_type",
        ),
        ({**BASIC, "tools": [{"name": "x"}]}, 400, "tools.0.input_schema"),
        ({**BASIC, "tool_choice": {"type": "sometimes"}}, 400, "tool_choice.type"),
        ({**BASIC, "thinking": {"type": "enabled"}}, 400, "thinking.budget_tokens"),
        ({**BASIC, "temperature": 1.5}, 400, "temperature"),
        ({**BASIC, "top_k": -1}, 400, "top_k"),
        ({**BASIC, "metadata": {"user_id": 5}}, 400, "metadata.user_id"),
        ({**BASIC, "system": [{"type": "image"}]}, 400, "system.0.type"),
        ({**BASIC, "model": "ghost"}, 404, "ghost"),
    ],
)
def test_bad_requests_name_the_field(gateway, ollama: FakeOllama, body, status, field):
    r = post(gateway.url + "/v1/messages", body)
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert error["error"]["type"] == (
        "invalid_request_error" if status == 400 else "not_found_error"
    )
    assert field in error["error"]["message"]
    assert r.headers["request-id"].startswith("req_")
    assert not [x for x in ollama.requests if x.path == "/api/chat"] or status == 404


def test_not_json_and_unknown_paths_answer_in_the_envelope(gateway):
    r = requests.post(
        gateway.url + "/v1/messages",
        data=b"{nope",
        headers={**HEADERS, "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = post(gateway.url + "/v1/messages/batches", BASIC)
    assert r.status_code == 404 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "not_found_error"
    r = requests.get(gateway.url + "/v1/messages", headers=HEADERS)
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_authentication_fails_fast(gateway):
    for headers in ({}, {"x-api-key": "sk-wrong"}, {"Authorization": "Bearer sk-wrong"}):
        r = requests.post(
            gateway.url + "/v1/messages?beta=true",
            json=BASIC,
            headers={"anthropic-version": "2023-06-01", **headers},
        )
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["x-should-retry"] == "false"
        assert r.headers["request-id"]
        assert "sk-wrong" not in r.text


def test_hello_probe_needs_no_key(gateway):
    r = requests.head(gateway.url + "/api/hello")
    assert r.status_code == 200 and r.content == b""
    r = requests.get(gateway.url + "/api/hello")
    assert r.status_code == 200 and r.content == b""


def test_count_tokens_with_beta_query(gateway, ollama: FakeOllama):
    r = post(
        gateway.url + "/v1/messages/count_tokens?beta=true",
        {"model": "llama3.2", "messages": user("Hello")},
        headers={"anthropic-beta": "token-counting-2024-11-01"},
    )
    assert r.status_code == 200 and set(r.json()) == {"input_tokens"}
    assert r.json()["input_tokens"] > 0
    r = post(gateway.url + "/v1/messages/count_tokens", {"model": "llama3.2"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_backpressure_and_limits(start_gateway, fake_ollama, ollama: FakeOllama, tmp_path):
    """503 overloaded_error after the queue deadline, 429 rate_limit_error when the queue is
    full, both with retry-after; 403 permission_error for a model the key may not use; 413."""
    config = tmp_path / "relay.toml"
    config.write_text('[keys.narrow]\nenv = "NARROW_KEY"\nmodels = ["qwen*"]\n')
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_CONFIG": str(config),
            "NARROW_KEY": "sk-narrow-key-0002",
            "RELAY_MAX_IN_FLIGHT": "1",
            "RELAY_MAX_QUEUE": "1",
            "RELAY_QUEUE_TIMEOUT": "1",
            "RELAY_CACHE_TTL": "0",
            "RELAY_MAX_BODY_BYTES": "65536",
        }
    )
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    holder = threading.Thread(target=post, args=(gw.url + "/v1/messages", BASIC))
    holder.start()
    try:
        deadline = time.monotonic() + 5
        while not [x for x in ollama.requests if x.path == "/api/chat"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        results: list[requests.Response] = []
        waiter = threading.Thread(
            target=lambda: results.append(post(gw.url + "/v1/messages", BASIC))
        )
        waiter.start()
        time.sleep(0.3)  # the waiter is queued now: the queue is full
        busy = post(gw.url + "/v1/messages", {**BASIC, "stream": True})
        waiter.join(10)
    finally:
        gate.set()
        holder.join(10)
    assert busy.status_code == 429 and busy.json()["error"]["type"] == "rate_limit_error"
    assert int(busy.headers["retry-after"]) >= 1
    (queued,) = results
    assert queued.status_code == 503 and queued.json()["error"]["type"] == "overloaded_error"
    assert int(queued.headers["retry-after"]) >= 1
    r = post(gw.url + "/v1/messages", BASIC, headers={"x-api-key": "sk-narrow-key-0002"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert r.headers["x-should-retry"] == "false"
    big = {**BASIC, "messages": user("x" * 70000)}
    r = post(gw.url + "/v1/messages", big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_reply_cache_answers_both_ways(start_gateway, fake_ollama, ollama: FakeOllama):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": API_KEY})
    body = {**BASIC, "messages": user("cache me"), "temperature": 0}
    first = post(gw.url + "/v1/messages", body)
    again = post(gw.url + "/v1/messages", body)
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    assert again.json()["content"] == first.json()["content"]
    assert again.json()["id"] != first.json()["id"]
    r, events = stream(gw, body)
    assert r.headers["X-Cache"] == "HIT"
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == first.json()["content"][0]["text"]
    assert len([x for x in ollama.requests if x.path == "/api/chat"]) == 1
