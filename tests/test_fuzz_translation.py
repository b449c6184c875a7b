"""Property tests (hypothesis) on the pure translation functions: no input makes them crash.

Parsers either return their core type or raise InvalidRequestError; stream decoders give the
same result however the bytes are split into chunks, and fail only with ValueError; the SSE
renderer always ends a stream with [DONE] or one error frame. Runs are derandomized and small.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.common.ndjson import iter_ndjson
from services.common.sse import iter_sse
from services.core.errors import GatewayError, InvalidRequestError, UpstreamError
from services.core.types import ChatDelta, ChatRequest, Message, StreamStats, ToolCall, Usage
from services.faces.chat_reply import render_chat_stream
from services.faces.chat_request import parse_chat_request
from services.faces.completions import parse_completion_request
from services.faces.embeddings import parse_embedding_request
from services.faces.responses_request import parse_responses_request

FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def near(valid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed values for a field, sometimes anything at all."""
    return st.sampled_from(valid) | json_values


part = st.fixed_dictionaries(
    {"type": near(["text", "image_url", "input_text", "refusal"])},
    optional={
        "text": near(["hi", ""]),
        "image_url": near(
            [{"url": "data:image/png;base64,iVBORw0KGgo="}, {"url": "https://x.test/a.png"}, "x"]
        ),
    },
)
tool_call = st.fixed_dictionaries(
    {"id": near(["call_1"]), "type": near(["function"])},
    optional={
        "function": st.fixed_dictionaries(
            {"name": near(["f"])}, optional={"arguments": near(['{"a":1}', {"a": 1}, ""])}
        )
    },
)
message = st.fixed_dictionaries(
    {"role": near(["user", "system", "developer", "assistant", "tool", "function"])},
    optional={
        "content": st.none() | st.text(max_size=8) | st.lists(part, max_size=3) | json_values,
        "tool_calls": st.lists(tool_call, max_size=2) | json_values,
        "tool_call_id": near(["call_1"]),
        "name": near(["f"]),
        "reasoning_content": near(["thought"]),
    },
)
tool = st.fixed_dictionaries(
    {"type": near(["function"])},
    optional={
        "function": st.fixed_dictionaries(
            {"name": near(["f", ""])}, optional={"parameters": near([{}, {"type": "object"}])}
        ),
        "name": near(["f"]),
    },
)
chat_body = st.fixed_dictionaries(
    {"model": near(["llama3.2", "", " "]), "messages": st.lists(message, max_size=3) | json_values},
    optional={
        "stream": near([True, False]),
        "stream_options": near([{"include_usage": True}]),
        "temperature": near([0, 0.5, 2, 3]),
        "top_p": near([0, 1]),
        "max_tokens": near([1, 0, 10**30]),
        "max_completion_tokens": near([16]),
        "stop": near(["x", ["a", "b"]]),
        "seed": near([7]),
        "presence_penalty": near([-2, 2]),
        "frequency_penalty": near([0]),
        "n": near([1, 2]),
        "tools": st.lists(tool, max_size=2) | json_values,
        "tool_choice": near(["auto", "none", "required", {"type": "function"}]),
        "response_format": near(
            [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"schema": {}}}]
        ),
        "reasoning_effort": near(["low", "max"]),
        "reasoning": near([{"effort": "high"}]),
        "user": near(["u"]),
    },
)
input_item = st.fixed_dictionaries(
    {},
    optional={
        "type": near(["message", "function_call", "function_call_output", "reasoning"]),
        "role": near(["user", "assistant", "system"]),
        "content": st.text(max_size=8)
        | st.lists(
            st.fixed_dictionaries(
                {"type": near(["input_text", "output_text", "input_image", "refusal"])},
                optional={"text": near(["hi"]), "image_url": near(["https://x.test/a.png"])},
            ),
            max_size=2,
        )
        | json_values,
        "call_id": near(["call_1"]),
        "name": near(["f"]),
        "arguments": near(['{"a":1}']),
        "output": near(["ok", [{"type": "input_text", "text": "ok"}]]),
    },
)
responses_body = st.fixed_dictionaries(
    {"model": near(["llama3.2", ""])},
    optional={
        "input": st.text(max_size=8) | st.lists(input_item, max_size=3) | json_values,
        "instructions": near(["Be brief."]),
        "previous_response_id": near(["resp_1", ""]),
        "store": near([True, False]),
        "stream": near([True]),
        "metadata": near([{"a": "b"}]),
        "temperature": near([1]),
        "max_output_tokens": near([5, 0]),
        "tools": st.lists(tool, max_size=2) | json_values,
        "tool_choice": near(["auto", {"type": "function", "name": "f"}]),
        "text": near([{"format": {"type": "json_object"}}, {"format": {"type": "json_schema"}}]),
        "reasoning": near([{"effort": "low"}]),
        "parallel_tool_calls": near([False]),
    },
)

# --- request parsers ----------------------------------------------------------------------


@FAST
@given(body=chat_body | json_values)
def test_chat_parser_accepts_or_raises_invalid_request(body):
    try:
        req = parse_chat_request(body)
    except InvalidRequestError as e:
        assert e.status == 400 and e.message
        return
    assert isinstance(req, ChatRequest) and req.model and req.messages
    json.dumps(req.extra)  # what is passed through stays JSON


@FAST
@given(body=responses_body | json_values)
def test_responses_parser_accepts_or_raises_invalid_request(body):
    try:
        rreq = parse_responses_request(body)
        # The service adds stored history to the core request; that must not crash either.
        req = rreq.chat_request((Message(role="user", content="before"),))
        assert isinstance(req, ChatRequest) and req.messages
        json.dumps(req.extra)
    except InvalidRequestError as e:
        assert e.status == 400 and e.message


text_body = st.fixed_dictionaries(
    {"model": near(["llama3.2", ""])},
    optional={
        "prompt": near(["Once", ["a", "b"], [1, 2], [[1], [2]], []]),
        "input": near(["Hello", ["a", "b"], [1, 2], [[1]], [], ""]),
        "encoding_format": near(["float", "base64"]),
        "dimensions": near([8, 0]),
        "max_tokens": near([16, 0]),
        "n": near([1, 2]),
        "stream": near([True]),
        "suffix": near(["end"]),
        "echo": near([True]),
        "stop": near(["x"]),
        "temperature": near([1]),
    },
)


@FAST
@given(body=text_body | json_values)
def test_completion_and_embedding_parsers_accept_or_raise_invalid_request(body):
    for parse in (parse_completion_request, parse_embedding_request):
        try:
            parse(body)
        except InvalidRequestError as e:
            assert e.status == 400 and e.message


# --- stream decoders ----------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def outcome(decoder, chunks: list[bytes]) -> tuple[list[Any], type | None]:
    out: list[Any] = []
    try:
        for item in decoder(chunks):
            out.append(item)
    except ValueError as e:
        return out, type(e)
    return out, None


ndjson_bytes = st.lists(json_values, max_size=5).map(
    lambda objs: b"".join(json.dumps(o).encode() + b"\n" for o in objs)
) | st.binary(max_size=64)
sse_bytes = st.lists(
    st.sampled_from([b"data: ", b"event: x\n", b": ping\n", b"\n", b"\r\n", b"data:", b"id: 1\n"])
    | st.text(max_size=6).map(str.encode)
    | st.binary(max_size=4),
    max_size=12,
).map(b"".join)


@FAST
@given(data=ndjson_bytes, cuts=st.lists(st.integers(min_value=0), max_size=6))
@example(data=b'{"a": 1}\n{"b":', cuts=[3])
@example(data=b"[" * 5000, cuts=[1])
def test_ndjson_decoding_does_not_depend_on_chunking(data, cuts):
    whole = outcome(iter_ndjson, [data])
    assert outcome(iter_ndjson, split(data, cuts)) == whole
    assert outcome(iter_ndjson, [bytes([b]) for b in data]) == whole


@FAST
@given(data=sse_bytes, cuts=st.lists(st.integers(min_value=0), max_size=6))
@example(data=b"data: caf\xc3\xa9\n\n", cuts=[10])
@example(data=b"data: a\r\n\r\ndata: b\n\n", cuts=[8])
def test_sse_decoding_does_not_depend_on_chunking(data, cuts):
    whole = outcome(iter_sse, [data])
    assert outcome(iter_sse, split(data, cuts)) == whole
    assert outcome(iter_sse, [bytes([b]) for b in data]) == whole


# --- stream renderer ----------------------------------------------------------------------

deltas = st.lists(
    st.builds(
        ChatDelta,
        content=st.text(max_size=6),
        reasoning=st.text(max_size=4),
        tool_calls=st.lists(
            st.builds(
                ToolCall,
                id=st.text(max_size=4),
                name=st.text(max_size=4),
                arguments=st.text(max_size=6),
                index=st.integers(0, 3),
            ),
            max_size=2,
        ).map(tuple),
        finish_reason=st.none() | st.sampled_from(["stop", "length", "tool_calls"]),
        usage=st.none() | st.builds(Usage, st.integers(0, 99), st.integers(0, 99)),
        replace=st.booleans(),
        refusal=st.text(max_size=3),
    ),
    max_size=6,
)
endings = st.sampled_from([None, UpstreamError("cut"), GatewayError("ours"), RuntimeError("bug")])


@FAST
@given(items=deltas, ending=endings, include_usage=st.booleans())
def test_rendered_stream_always_ends_with_done_or_one_error_frame(items, ending, include_usage):
    def source():
        yield from items
        if ending is not None:
            raise ending

    stats = StreamStats()
    frames = list(render_chat_stream(source(), "m", include_usage, stats))
    events = [f.decode() for f in frames]
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    payloads = [e[len("data: ") : -2] for e in events]
    assert "\n" not in "".join(payloads)
    finished = any(d.finish_reason is not None for d in items)
    if finished:
        assert payloads[-1] == "[DONE]" and stats.error is None
    else:
        assert set(json.loads(payloads[-1])) == {"error"} and stats.error
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    assert sum(1 for c in chunks if "error" in c) <= 1
    assert len({c["id"] for c in chunks if "id" in c}) == 1


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 50_000])
def test_deeply_nested_json_is_a_parse_error_not_a_crash(body):
    with pytest.raises(ValueError):
        list(iter_ndjson([body + b"\n"]))
