"""Property tests (hypothesis) on the Anthropic face's pure functions: the parser returns a core
request or raises InvalidRequestError; the stream renderer always emits well-formed events with
increasing block indexes and ends with message_stop or one error event. Derandomized and small.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.errors import InvalidRequestError, UpstreamError
from services.core.types import ChatDelta, ChatRequest, StreamStats, ToolCall, Usage
from services.faces.anthropic_reply import render_stream
from services.faces.anthropic_request import estimate_input_tokens, parse_messages_request
from tests.anthropic.conftest import sse_events

FAST = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def near(valid: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(valid) | json_values


source = st.fixed_dictionaries(
    {"type": near(["base64", "url", "file", "text", "content"])},
    optional={
        "media_type": near(["image/png", "image/tiff", "text/plain"]),
        "data": near(["iVBORw0KGgo=", ""]),
        "url": near(["https://x.test/a.png", "ftp://x"]),
        "content": near(["text", [{"type": "text", "text": "t"}]]),
    },
)
block = st.fixed_dictionaries(
    {
        "type": near(
            [
                "text",
                "image",
                "document",
                "tool_use",
                "tool_result",
                "thinking",
                "redacted_thinking",
            ]
        )
    },
    optional={
        "text": near(["hi", ""]),
        "source": source | json_values,
        "id": near(["toolu_1", ""]),
        "name": near(["Bash", ""]),
        "input": near([{}, {"a": 1}, "x"]),
        "tool_use_id": near(["toolu_1"]),
        "content": near(["ok", [{"type": "text", "text": "r"}], [{"type": "image"}]]),
        "is_error": near([True, False]),
        "thinking": near(["hm"]),
        "cache_control": json_values,
    },
)
message = st.fixed_dictionaries(
    {"role": near(["user", "assistant", "system"])},
    optional={"content": near(["hello"]) | st.lists(block, max_size=3)},
)
tool = st.fixed_dictionaries(
    {},
    optional={
        "name": near(["Bash"]),
        "type": near(["custom", "web_search_20250305"]),
        "input_schema": near([{"type": "object"}]),
        "defer_loading": near([True, False]),
    },
)
body = st.fixed_dictionaries(
    {"model": near(["m"]), "messages": st.lists(message, max_size=3) | json_values},
    optional={
        "max_tokens": near([1, 100, 0]),
        "system": near(["sys", [{"type": "text", "text": "x-anthropic-billing-header: a"}]]),
        "tools": st.lists(tool, max_size=3) | json_values,
        "tool_choice": near([{"type": "auto"}, {"type": "tool", "name": "Bash"}, {"type": "x"}]),
        "thinking": near([{"type": "enabled", "budget_tokens": 2048}, {"type": "adaptive"}]),
        "output_config": near([{"effort": "high"}, {"format": {"type": "json_schema"}}]),
        "metadata": near([{"user_id": "u"}]),
        "top_k": near([5, -1]),
        "temperature": near([0.5, 3]),
        "stop_sequences": near([["x"], "x"]),
    },
)


@FAST
@given(body)
def test_parser_returns_a_request_or_a_400(raw: Any) -> None:
    try:
        req = parse_messages_request(raw)
    except InvalidRequestError as e:
        assert e.status == 400 and e.message
        return
    assert isinstance(req, ChatRequest) and req.messages and req.max_tokens
    assert estimate_input_tokens(req) > 0
    assert "x-anthropic-billing-header" not in json.dumps([m.text() for m in req.messages])


delta = st.builds(
    ChatDelta,
    content=st.text(max_size=4),
    reasoning=st.text(max_size=4),
    tool_calls=st.lists(
        st.builds(
            ToolCall,
            id=st.sampled_from(["", "call_1", "toolu_2"]),
            name=st.sampled_from(["", "f"]),
            arguments=st.sampled_from(["", "{", '"a": 1}', "{}", "[1]"]),
            index=st.integers(0, 2),
        ),
        max_size=2,
    ).map(tuple),
    refusal=st.sampled_from(["", "no"]),
)


@FAST
@given(
    st.lists(delta, max_size=6),
    st.sampled_from(["stop", "length", "tool_calls", None, "fail"]),
)
def test_stream_is_always_well_formed(deltas: list[ChatDelta], end: str | None) -> None:
    def source():
        yield from deltas
        if end == "fail":
            raise UpstreamError("boom")
        if end is not None:
            yield ChatDelta(finish_reason=end, usage=Usage(3, 4))

    raw = b"".join(render_stream(source(), "m", 7, StreamStats()))
    events = sse_events(raw)
    kinds = [n for n, _ in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] in ("message_stop", "error")
    assert (kinds[-1] == "message_stop") is (end not in (None, "fail"))
    open_index, next_index = None, 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
            if data["delta"]["type"] == "input_json_delta":
                assert isinstance(json.loads(data["delta"]["partial_json"]), dict)
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None


def test_a_body_with_nothing_readable_is_a_400() -> None:
    for messages in (
        [{"role": "system", "content": "only a system message"}],
        [{"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]}],
    ):
        try:
            parse_messages_request({"model": "m", "max_tokens": 5, "messages": messages})
            raise AssertionError("accepted")
        except InvalidRequestError as e:
            assert e.param == "messages"
