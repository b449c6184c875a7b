"""The Chat <-> Responses conversion and the compat backend's config, with plain values."""

from __future__ import annotations

import pytest

import config
from services.backends.openai_wire import ChatChunkReader
from services.backends.responses_upstream import (
    ResponsesStreamReader,
    chat_to_responses,
    responses_to_result,
)
from services.core.errors import UpstreamError
from services.core.types import ChatDelta, ToolCall, Usage
from services.faces.chat_request import parse_chat_request

USER = [{"role": "user", "content": "Hi"}]


def convert(**body):
    return chat_to_responses(parse_chat_request({"model": "m", "messages": USER, **body}), False)


def test_json_object_and_plain_requests_map_to_text_format():
    assert convert(response_format={"type": "json_object"})["text"] == {
        "format": {"type": "json_object"}
    }
    plain = convert()
    assert plain == {"model": "m", "input": plain["input"], "stream": False, "store": False}
    assert convert(store=True)["store"] is True  # the caller's own choice wins


def test_logprobs_ask_for_the_output_text_logprobs():
    body = convert(logprobs=True, top_logprobs=3)
    assert "logprobs" not in body
    assert (body["top_logprobs"], body["include"]) == (3, ["message.output_text.logprobs"])


def test_arguments_sent_only_in_the_done_event_still_reach_the_client():
    reader = ResponsesStreamReader("up")
    item = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}
    first = reader.feed({"type": "response.output_item.added", "output_index": 0, "item": item})
    rest = reader.feed(
        {"type": "response.function_call_arguments.done", "output_index": 0, "arguments": "{}"}
    )
    again = reader.feed(
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "arguments": "{}"},
        }
    )
    assert first == [ChatDelta(tool_calls=(ToolCall("call_1", "f", "", 0),))]
    assert rest == [ChatDelta(tool_calls=(ToolCall("", "", "{}", 0),))]
    assert again == []


def test_summary_parts_are_set_apart_and_completion_maps_usage():
    reader = ResponsesStreamReader("up")
    events = [
        {"type": "response.reasoning_summary_part.added"},
        {"type": "response.reasoning_summary_text.delta", "delta": "a"},
        {"type": "response.reasoning_summary_part.added"},
        {"type": "response.reasoning_summary_text.delta", "delta": "b"},
    ]
    text = "".join(d.reasoning for e in events for d in reader.feed(e))
    assert text == "a\n\nb"
    usage = {"input_tokens": 3, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}
    [end] = reader.feed({"type": "response.completed", "response": {"usage": usage}})
    assert (end.finish_reason, end.usage) == ("stop", Usage(3, 2, cached_tokens=1))
    assert reader.finished


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "message": "boom"},
        {"type": "error", "error": {"message": "boom"}},
        {"type": "response.failed", "response": {"error": {"message": "boom"}}},
    ],
)
def test_failures_flat_or_nested_raise_with_the_message(event):
    with pytest.raises(UpstreamError, match="boom"):
        ResponsesStreamReader("up").feed(event)


def test_content_filter_and_failed_whole_responses():
    cut = {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "output": []}
    assert responses_to_result(cut, "up").finish_reason == "content_filter"
    failed = {"status": "failed", "error": {"message": "no"}, "output": []}
    with pytest.raises(UpstreamError, match="no"):
        responses_to_result(failed, "up")


def test_chat_chunks_hold_the_finish_until_the_usage_arrives():
    reader = ChatChunkReader("up")
    assert reader.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]}) == []
    assert reader.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}) == []
    assert reader.finish() == [ChatDelta(finish_reason="stop", usage=Usage(1, 2))]
    with pytest.raises(UpstreamError, match="without an index"):
        reader.feed({"choices": [{"delta": {"tool_calls": [{"function": {}}]}}]})
    with pytest.raises(UpstreamError, match="before the reply was complete"):
        ChatChunkReader("up").finish()


def write(tmp_path, text):
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return {"RELAY_CONFIG": str(path), "RELAY_ENV_FILE": ""}


def test_openai_backend_settings_and_their_errors(tmp_path):
    head = '[backends.up]\ntype = "openai"\nurl = "http://127.0.0.1:9/v1/"\n'
    env = write(tmp_path, head + 'key_env = "UP_KEY"\napi = "responses"\n')
    [backend] = config.load({**env, "UP_KEY": "sk-secret-1"}).backends
    assert (backend.url, backend.api, backend.api_key) == (
        "http://127.0.0.1:9/v1",
        "responses",
        "sk-secret-1",
    )
    assert "sk-secret-1" not in repr(backend)
    with pytest.raises(
        config.ConfigError, match="backends.up.key_env: the environment variable UP_KEY"
    ):
        config.load(env)
    env = write(tmp_path, head + 'api = "completions"\n')
    with pytest.raises(config.ConfigError, match="backends.up.api must be one of chat, responses"):
        config.load(env)
    [keyless] = config.load(write(tmp_path, head)).backends
    assert (keyless.api, keyless.api_key) == ("chat", None)
