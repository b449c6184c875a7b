"""The exact SSE bytes and headers of streamed chat, checked over raw HTTP."""

from __future__ import annotations

import json

from tests.fakes.ollama import FakeOllama

USER = [{"role": "user", "content": "Hi"}]


def post_stream(gateway, http, **body):
    body = {"model": "llama3.2", "messages": USER, "stream": True, **body}
    return http.post(gateway.url + "/v1/chat/completions", json=body, stream=True)


def frames(raw: bytes) -> list[str]:
    """Split an SSE body into its events; each must be a single `data:` line."""
    assert raw.endswith(b"\n\n"), raw[-40:]
    events = raw.decode().split("\n\n")[:-1]
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [e[len("data: ") :] for e in events]


def test_stream_headers_and_framing(gateway, http, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Hel", "lo"], prompt_eval_count=4, eval_count=2)
    resp = post_stream(gateway, http, stream_options={"include_usage": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["X-Request-ID"]
    data = frames(resp.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]

    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "llama3.2" for c in chunks)
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [c["choices"][0]["delta"] for c in chunks[1:3]] == [
        {"content": "Hel"},
        {"content": "lo"},
    ]
    assert sum("role" in c["choices"][0]["delta"] for c in chunks if c["choices"]) == 1
    finish = chunks[-2]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_without_include_usage_chunks_carry_no_usage(gateway, http, ollama):
    data = frames(post_stream(gateway, http).content)
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_tool_call_deltas_carry_index_and_send_id_once(gateway, http, ollama: FakeOllama):
    ollama.script(
        "llama3.2",
        content=[],
        tool_calls=[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "<&>"}}],
    )
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in "ab"]
    chunks = [json.loads(d) for d in frames(post_stream(gateway, http, tools=tools).content)[:-1]]
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["a", "b"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"x": 1}, {"y": "<&>"}]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_error_before_first_byte_is_a_real_http_status(gateway, http, ollama):
    ollama.script(
        "llama3.2", status=500, error="unexpected server status: llm server loading model"
    )
    resp = post_stream(gateway, http)
    assert resp.status_code == 502
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Ollama backend 'ollama'" in error["message"]


def test_midstream_ollama_error_becomes_one_error_frame(gateway, http, ollama: FakeOllama):
    ollama.script(
        "llama3.2",
        content=["partial"],
        midstream_error="an error was encountered while running the model: CUDA error",
    )
    resp = post_stream(gateway, http)
    assert resp.status_code == 200
    data = frames(resp.content)
    assert "[DONE]" not in data
    assert json.loads(data[-2])["choices"][0]["delta"] == {"content": "partial"}
    error = json.loads(data[-1])["error"]
    assert error["type"] == "server_error"
    assert "Ollama backend 'ollama'" in error["message"] and "CUDA error" in error["message"]


def test_stream_cut_without_done_ends_with_an_error_frame(gateway, http, ollama: FakeOllama):
    ollama.script("llama3.2", content=["partial"], truncate=True)
    data = frames(post_stream(gateway, http).content)
    assert "before it was complete" in json.loads(data[-1])["error"]["message"]
    assert "[DONE]" not in data


def test_truncated_ndjson_line_ends_with_an_error_frame(gateway, http, ollama: FakeOllama):
    ollama.script("llama3.2", content=["partial"], garbage_line=True)
    data = frames(post_stream(gateway, http).content)
    assert "malformed" in json.loads(data[-1])["error"]["message"]


def test_non_ascii_text_survives_the_round_trip(gateway, http, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Grüße ", "🌍 ", "<b>&</b>"])
    data = frames(post_stream(gateway, http).content)
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content", "")
        for d in data[:-1]
        if json.loads(d)["choices"]
    )
    assert text == "Grüße 🌍 <b>&</b>"
