"""The storage codec for core messages: round trips exactly, refuses anything else by name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.core.types import ContentPart, Message, ToolCall
from services.state.message_records import MalformedRecord, dump_messages, load_messages
from services.state.response_store import serialized_size

FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

text = st.text(max_size=12)  # any code point, lone surrogates too (stored escaped)
parts = st.builds(ContentPart, type=st.sampled_from(["text", "image"]), text=text, url=text)
calls = st.builds(ToolCall, id=text, name=text, arguments=text, index=st.integers(0, 2**40))
messages = st.builds(
    Message,
    role=st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | text,
    content=st.none() | text | st.lists(parts, max_size=3).map(tuple),
    name=st.none() | text,
    tool_calls=st.lists(calls, max_size=3).map(tuple),
    tool_call_id=st.none() | text,
    reasoning=st.none() | text,
)


@FAST
@given(st.lists(messages, max_size=4))
def test_messages_round_trip_exactly_through_stored_json(conversation: list[Message]):
    stored = json.dumps(dump_messages(conversation), ensure_ascii=False)
    assert load_messages(json.loads(stored)) == tuple(conversation)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FAST
@given(json_values | st.lists(json_values, max_size=3))
@example([{"role": "user", "content": [{"type": "text", "text": ""}]}])
def test_anything_else_loads_or_is_a_malformed_record(value: Any):
    try:
        loaded = load_messages(value)
    except MalformedRecord:
        return
    assert load_messages(dump_messages(loaded)) == loaded


def test_the_shape_is_the_core_types_own_with_defaults_left_out():
    conversation = (
        Message(
            role="user",
            content=(ContentPart("text", text="Look"), ContentPart("image", url="data:x")),
        ),
        Message(role="assistant", content=None, tool_calls=(ToolCall("c1", "f", "{}", 0),)),
        Message(role="tool", content="3", tool_call_id="c1"),
        Message(role="assistant", content="", reasoning="Hm."),
    )
    assert dump_messages(conversation) == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look"}, {"type": "image", "url": "data:x"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}", "index": 0}],
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
        {"role": "assistant", "content": "", "reasoning": "Hm."},
    ]


USER = {"role": "user", "content": "Hi"}
CALL = {"id": "c1", "name": "f", "arguments": "{}", "index": 0}


@pytest.mark.parametrize(
    ("records", "where"),
    [
        ({"messages": []}, "messages: not a list"),
        ([USER, "Hi"], "messages[1]: not an object"),
        ([{"content": "Hi"}], "messages[0]: missing or unknown fields"),
        ([{"role": "user"}], "messages[0]: missing or unknown fields"),
        ([{**USER, "images": []}], "messages[0]: missing or unknown fields"),
        ([{**USER, "role": None}], "messages[0].role: not a string"),
        ([{**USER, "content": 5}], "messages[0].content: not a string, list or null"),
        ([{**USER, "content": [{"type": "image_url"}]}], "messages[0].content[0].type"),
        ([{**USER, "content": [{"type": "text", "text": 1}]}], "messages[0].content[0].text"),
        ([{**USER, "name": None}], "messages[0].name: not a string"),
        ([{**USER, "tool_calls": []}], "messages[0].tool_calls: not a non-empty list"),
        ([{**USER, "tool_calls": [{**CALL, "index": True}]}], "tool_calls[0].index"),
        ([{**USER, "tool_calls": [{**CALL, "index": -1}]}], "tool_calls[0].index"),
        ([{**USER, "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]}], "fields"),
        ([{**USER, "tool_calls": [{**CALL, "arguments": {}}]}], "tool_calls[0].arguments"),
        ([{**USER, "reasoning": ["a"]}], "messages[0].reasoning: not a string"),
    ],
)
def test_a_malformed_record_is_refused_naming_where(records: Any, where: str):
    with pytest.raises(MalformedRecord, match=where.replace("[", r"\[").replace("]", r"\]")):
        load_messages(records)


def test_stored_size_counts_the_records_in_utf8():
    conversation = (Message(role="user", content="é" * 10),)
    assert (
        serialized_size(dump_messages(conversation)) == len('[{"role":"user","content":""}]') + 20
    )
