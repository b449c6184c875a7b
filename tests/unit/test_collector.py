"""The one delta collector: whole replies and cache recordings are built the same way."""

from __future__ import annotations

import pytest

from services.core.collector import collect, recording
from services.core.errors import UpstreamError
from services.core.types import ChatDelta, ToolCall, Usage


def fragments():
    # An OpenAI-style stream: the call's id and name once, its arguments in fragments.
    yield ChatDelta(content="Let me look.")
    yield ChatDelta(tool_calls=(ToolCall(id="call_1", name="weather", arguments="", index=0),))
    yield ChatDelta(tool_calls=(ToolCall(id="", name="", arguments='{"city": ', index=0),))
    yield ChatDelta(tool_calls=(ToolCall(id="call_2", name="time", arguments="{}", index=1),))
    yield ChatDelta(tool_calls=(ToolCall(id="", name="", arguments='"Oslo"}', index=0),))
    yield ChatDelta(finish_reason="tool_calls", usage=Usage(3, 4))


def test_tool_call_argument_fragments_are_joined_by_index():
    result = collect(fragments(), "Upstream")
    assert result.content == "Let me look."
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_1", "weather", '{"city": "Oslo"}'),
        ("call_2", "time", "{}"),
    ]
    assert result.finish_reason == "tool_calls" and result.usage == Usage(3, 4)


def test_a_recorded_stream_stores_the_same_reply_a_whole_call_gets():
    stored = []
    passed = list(recording(fragments(), stored.append))
    assert passed == list(fragments())
    assert stored == [collect(fragments(), "Upstream")]


def test_replacement_logprobs_and_headers_are_collected():
    deltas = iter(
        [
            ChatDelta(content="bad", headers={"X-Dify-Conversation-Id": "c1"}),
            ChatDelta(content="good", replace=True, logprobs={"content": [{"token": "good"}]}),
            ChatDelta(finish_reason="stop"),
        ]
    )
    result = collect(deltas, "Upstream")
    assert result.content == "good"
    assert result.logprobs == {"content": [{"token": "good"}]}
    assert result.headers == {"X-Dify-Conversation-Id": "c1"}


def test_a_stream_that_ends_early_is_an_upstream_error_and_is_not_stored():
    stored = []
    early = [ChatDelta(content="half")]
    with pytest.raises(UpstreamError, match="Upstream ended its reply early"):
        collect(iter(early), "Upstream")
    assert list(recording((d for d in early), stored.append)) == early and stored == []
