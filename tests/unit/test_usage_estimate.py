"""The token estimate for replies whose upstream gave no usage (services/core/usage_estimate.py)."""

from __future__ import annotations

from services.core.types import ChatDelta, ChatRequest, ChatResult, Message, Usage
from services.core.usage_estimate import chat_prompt_tokens, complete_usage, fill_usage


def deltas(*items: ChatDelta):
    yield from items


def test_a_stream_without_usage_counts_its_pieces_and_is_marked_estimated():
    out = list(
        fill_usage(
            deltas(ChatDelta(content="a"), ChatDelta(content="b"), ChatDelta(finish_reason="stop")),
            prompt_tokens=9,
        )
    )
    assert out[-1].usage == Usage(9, 2, estimated=True)


def test_long_pieces_count_four_bytes_a_token_and_given_usage_stays():
    out = list(fill_usage(deltas(ChatDelta(content="x" * 40), ChatDelta(finish_reason="stop")), 1))
    assert out[-1].usage == Usage(1, 10, estimated=True)
    given = Usage(5, 7)
    out = list(
        fill_usage(
            deltas(ChatDelta(content="a"), ChatDelta("", finish_reason="stop", usage=given)), 1
        )
    )
    assert out[-1].usage is given


def test_zero_usage_for_a_non_empty_whole_reply_is_estimated():
    req = ChatRequest(model="m", messages=(Message("user", "Hello world!"),))
    assert chat_prompt_tokens(req) == 3 + 4 + 3
    result = complete_usage(ChatResult("abcdefgh"), chat_prompt_tokens(req))
    assert result.usage == Usage(10, 2, estimated=True)
    assert complete_usage(ChatResult("", usage=Usage()), 4).usage == Usage()  # said nothing


def test_lone_surrogates_are_counted_not_a_crash():
    req = ChatRequest(model="m", messages=(Message("user", "a\ud800"),))
    assert chat_prompt_tokens(req) == 1 + 4 + 3
    out = list(fill_usage(deltas(ChatDelta(content="\udfff"), ChatDelta(finish_reason="stop")), 1))
    assert out[-1].usage == Usage(1, 1, estimated=True)
