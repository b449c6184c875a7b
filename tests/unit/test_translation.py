"""Pure translation functions, checked with plain values (no HTTP)."""

from __future__ import annotations

import json

import pytest

from services.backends.ollama_text import sampling_options
from services.backends.openai_wire import to_chat_body
from services.common.ndjson import iter_ndjson
from services.core.errors import InvalidRequestError, UpstreamError
from services.core.types import ChatDelta, StreamStats, ToolCall, Usage
from services.faces.chat_reply import render_chat_stream
from services.faces.chat_request import parse_chat_request

USER = [{"role": "user", "content": "Hi"}]


def test_both_limits_keep_their_names_the_smaller_holds_and_unknown_fields_stay_in_extra():
    req = parse_chat_request(
        {"model": "m", "messages": USER, "max_tokens": 5, "max_completion_tokens": 9, "store": True}
    )
    assert req.max_tokens == 5
    assert req.max_tokens_names == ("max_tokens", "max_completion_tokens")
    assert to_chat_body(req, False)["max_tokens"] == 5
    assert to_chat_body(req, False)["max_completion_tokens"] == 5
    assert req.extra == {"store": True}


def test_the_limit_goes_upstream_under_the_name_the_caller_used():
    for name in ("max_tokens", "max_completion_tokens"):
        body = to_chat_body(parse_chat_request({"model": "m", "messages": USER, name: 7}), True)
        other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
        assert body[name] == 7
        assert other not in body


def test_reasoning_object_and_string_image_url_are_accepted():
    req = parse_chat_request(
        {
            "model": "m",
            "reasoning": {"effort": "low"},
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}
            ],
        }
    )
    assert req.reasoning_effort == "low"
    assert req.messages[0].image_urls() == ("https://x/y.png",)


def test_booleans_are_not_numbers():
    with pytest.raises(InvalidRequestError) as e:
        parse_chat_request({"model": "m", "messages": USER, "seed": True})
    assert e.value.param == "seed"


def test_ollama_settings_stay_unchecked_in_extra_until_an_ollama_backend_reads_them():
    # An OpenAI-compatible upstream gets them as sent; only the Ollama translation checks them.
    body = {"model": "m", "messages": USER, "num_ctx": "big", "think": "maybe", "format": 1}
    req = parse_chat_request(body)
    assert req.extra == {"num_ctx": "big", "think": "maybe", "format": 1}
    with pytest.raises(InvalidRequestError) as e:
        sampling_options(req)
    assert e.value.param == "num_ctx"


def test_ollama_options_precedence_native_options_over_top_level_over_openai():
    req = parse_chat_request(
        {
            "model": "m",
            "messages": USER,
            "temperature": 0.9,
            "top_k": 5,
            "num_ctx": 4096,
            "use_mmap": False,
            "options": {"num_ctx": 8192, "temperature": 0.1},
        }
    )
    assert sampling_options(req) == {
        "temperature": 0.1,
        "top_k": 5,
        "num_ctx": 8192,
        "use_mmap": False,
    }


def test_ndjson_lines_split_across_chunks():
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n", b'{"c":3}']
    assert list(iter_ndjson(chunks)) == [{"a": 1}, {"b": 2}, {"c": 3}]
    with pytest.raises(ValueError):
        list(iter_ndjson([b'{"a":1}\n{"b":']))


def decode(frames):
    return [f.decode() for f in frames]


def test_stream_renders_tool_fragments_with_id_once_and_error_frames():
    deltas = iter(
        [
            ChatDelta(tool_calls=(ToolCall("call_1", "f", '{"a":', 0),)),
            ChatDelta(tool_calls=(ToolCall("call_1", "f", "1}", 0),)),
            ChatDelta(finish_reason="tool_calls", usage=Usage(1, 2)),
        ]
    )
    stats = StreamStats()
    out = decode(render_chat_stream(deltas, "m", False, stats))
    calls = [json.loads(f[6:])["choices"][0]["delta"]["tool_calls"][0] for f in out[1:3]]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":'},
    }
    assert calls[1] == {"index": 0, "function": {"arguments": "1}"}}
    assert out[-1] == "data: [DONE]\n\n"
    assert stats.usage == Usage(1, 2) and stats.finish_reason == "tool_calls"


def test_stream_error_and_early_end_become_error_frames():
    def failing():
        yield ChatDelta(content="x")
        raise UpstreamError("backend broke")

    stats = StreamStats()
    out = decode(render_chat_stream(failing(), "m", False, stats))
    assert json.loads(out[-1][6:])["error"]["message"] == "backend broke"
    assert stats.error == "backend broke"
    out = decode(render_chat_stream(iter([ChatDelta(content="x")]), "m", False, StreamStats()))
    assert "ended before" in json.loads(out[-1][6:])["error"]["message"]
