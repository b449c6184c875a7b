"""Chat Completions through the gateway with the official openai SDK as the client."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import wait_until
from tests.fakes.ollama import FakeOllama

USER = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def test_plain_chat_returns_text_usage_and_a_fresh_id(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Hel", "lo!"], prompt_eval_count=7, eval_count=2)
    first = client.chat.completions.create(model="llama3.2", messages=USER)
    second = client.chat.completions.create(model="llama3.2", messages=USER)

    assert first.choices[0].message.content == "Hello!"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason == "stop"
    assert first.model == "llama3.2"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (7, 2)
    assert first.usage.total_tokens == 9
    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert ollama.last().body["stream"] is False


def test_request_fields_reach_ollama_as_native_options(client, ollama: FakeOllama):
    client.chat.completions.create(
        model="llama3.2",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
        temperature=0.2,
        top_p=0.5,
        max_completion_tokens=64,
        stop="END",
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
        user="someone",
        logit_bias={"42": 1},  # accepted and ignored
        extra_body={"options": {"num_ctx": 8192}, "keep_alive": "10m"},
    )
    sent = ollama.last().body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a\nb"},
    ]
    assert sent["options"] == {
        "temperature": 0.2,
        "top_p": 0.5,
        "num_predict": 64,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["END"],
        "num_ctx": 8192,
    }
    assert sent["format"] == "json"
    assert sent["keep_alive"] == "10m"
    assert "tools" not in sent and "think" not in sent


def test_unset_sampling_fields_are_left_to_the_modelfile(client, ollama: FakeOllama):
    client.chat.completions.create(model="llama3.2", messages=USER, max_tokens=5, stop=["a", "b"])
    sent = ollama.last().body
    assert sent["options"] == {"num_predict": 5, "stop": ["a", "b"]}


def test_streamed_chat_with_usage(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["One", " two", " three"], prompt_eval_count=3, eval_count=3)
    stream = client.chat.completions.create(
        model="llama3.2", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three"
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 6
    assert ollama.last().body["stream"] is True


def test_stream_helper_reaches_final_completion(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Hi", " there"])
    with client.chat.completions.stream(model="llama3.2", messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hi there"
    assert final.choices[0].finish_reason == "stop"


def test_tool_call_round_trip(client, ollama: FakeOllama):
    ollama.script(
        "llama3.2", content=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Tokyo"}}]
    )
    reply = client.chat.completions.create(model="llama3.2", messages=USER, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Tokyo"}
    assert call.id.startswith("call_")
    assert ollama.last().body["tools"] == [WEATHER_TOOL]

    ollama.script("llama3.2", content=["It is 11 degrees."])
    history = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "11 degrees"},
    ]
    answer = client.chat.completions.create(
        model="llama3.2", messages=history, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == "It is 11 degrees."
    sent = ollama.last().body["messages"]
    assert sent[1]["tool_calls"] == [
        {
            "id": call.id,
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
        }
    ]
    assert sent[2] == {
        "role": "tool",
        "content": "11 degrees",
        "tool_name": "get_weather",
        "tool_call_id": call.id,
    }


def test_streamed_parallel_tool_calls_have_distinct_indexes(client, ollama: FakeOllama):
    ollama.script(
        "llama3.2",
        content=[],
        tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "get_time", "arguments": {}},
        ],
    )
    with client.chat.completions.stream(
        model="llama3.2", messages=USER, tools=[WEATHER_TOOL, TIME_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert json.loads(calls[1].function.arguments) == {}
    assert calls[0].id != calls[1].id


def test_tool_calls_from_old_ollama_get_generated_unique_ids(client, ollama: FakeOllama):
    ollama.script(
        "llama3.2",
        content=[],
        send_ids=False,
        tool_calls=[{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}],
    )
    reply = client.chat.completions.create(model="llama3.2", messages=USER, tools=[TIME_TOOL])
    ids = [c.id for c in reply.choices[0].message.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") and len(i) > 12 for i in ids)


def test_tool_choice_none_sends_no_tools_and_a_name_sends_only_that_tool(
    client, ollama: FakeOllama
):
    client.chat.completions.create(
        model="llama3.2", messages=USER, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="none"
    )
    assert "tools" not in ollama.last().body
    client.chat.completions.create(
        model="llama3.2",
        messages=USER,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert ollama.last().body["tools"] == [TIME_TOOL]


class Weather(BaseModel):
    city: str
    degrees: int


def test_parse_with_a_pydantic_schema(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=['{"city": "Oslo", ', '"degrees": 3}'])
    reply = client.chat.completions.parse(model="llama3.2", messages=USER, response_format=Weather)
    assert reply.choices[0].message.parsed == Weather(city="Oslo", degrees=3)
    schema = ollama.last().body["format"]
    assert schema["type"] == "object" and set(schema["properties"]) == {"city", "degrees"}


def test_parse_raises_length_error_when_cut_off(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=['{"city": "Os'], done_reason="length")
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="llama3.2", messages=USER, response_format=Weather)


def test_image_part_becomes_ollama_images(client, ollama: FakeOllama):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    encoded = base64.b64encode(png).decode()
    client.chat.completions.create(
        model="llama3.2",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
                ],
            }
        ],
    )
    [message] = ollama.last().body["messages"]
    assert message == {"role": "user", "content": "What is this?", "images": [encoded]}


def test_reasoning_effort_and_thinking(client, ollama: FakeOllama):
    ollama.script("qwen3:8b", thinking=["Let me ", "think."], content=["42"])
    reply = client.chat.completions.create(model="qwen3:8b", messages=USER, reasoning_effort="high")
    assert ollama.last().body["think"] == "high"
    message = reply.choices[0].message
    assert message.content == "42"
    assert message.model_extra["reasoning_content"] == "Let me think."

    stream = client.chat.completions.create(
        model="qwen3:8b", messages=USER, reasoning_effort="none", stream=True
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert ollama.last().body["think"] is False
    reasoning = "".join((d.model_extra or {}).get("reasoning_content", "") for d in deltas)
    assert reasoning == "Let me think."
    assert "".join(d.content or "" for d in deltas) == "42"


def test_reasoning_effort_on_a_model_that_cannot_think_still_answers(client, ollama: FakeOllama):
    ollama.script("gemma3:1b", thinking_capable=False, content=["plain"])
    reply = client.chat.completions.create(model="gemma3:1b", messages=USER, reasoning_effort="low")
    assert reply.choices[0].message.content == "plain"
    bodies = [r.body for r in ollama.requests if r.path == "/api/chat"]
    assert bodies[-2]["think"] == "low" and "think" not in bodies[-1]


def test_finish_reason_length(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["cut"], done_reason="length")
    reply = client.chat.completions.create(model="llama3.2", messages=USER, max_tokens=1)
    assert reply.choices[0].finish_reason == "length"


def test_abandoned_stream_closes_the_upstream_within_a_second(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["tok "] * 400, pace=0.05)
    stream = client.chat.completions.create(model="llama3.2", messages=USER, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    left = time.monotonic()
    wait_until(lambda: ollama.disconnects, timeout=3)
    model, seen_at = ollama.disconnects[0]
    assert model == "llama3.2"
    assert seen_at - left < 1.0
    assert "llama3.2" not in ollama.completed


# --- errors, raised as the SDK's own classes ------------------------------------------------


def test_wrong_key_is_authentication_error(gateway, ollama):
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong-key-000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    assert "sk-wrong-key-000" not in str(e.value.body)
    assert not ollama.requests


def test_unknown_model_is_not_found_error(client, ollama):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="llama9", messages=USER)
    assert e.value.code == "model_not_found" and e.value.param == "model"
    assert "Ollama backend 'ollama'" in e.value.message


def test_n_above_one_is_bad_request_naming_n(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llama3.2", messages=USER, n=2)
    assert e.value.param == "n" and e.value.type == "invalid_request_error"


def test_ollama_400_stays_bad_request(client, ollama):
    ollama.script(
        "llama3.2",
        status=400,
        error="registry.ollama.ai/library/llama3.2:latest does not support tools",
    )
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llama3.2", messages=USER, tools=[WEATHER_TOOL])
    assert "does not support tools" in e.value.message


def test_ollama_500_is_a_502_naming_the_backend(client, ollama):
    ollama.script("llama3.2", status=500, error="llama runner process has terminated")
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.status_code == 502
    assert "Ollama backend 'ollama'" in e.value.message and "terminated" in e.value.message


def test_ollama_busy_is_a_503_with_retry_after(client, ollama):
    ollama.script(
        "llama3.2",
        status=503,
        error="server busy, please try again.  maximum pending requests exceeded",
    )
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.status_code == 503
    assert e.value.response.headers["Retry-After"] == "1"


def test_unreachable_ollama_is_503_and_slow_ollama_is_504(start_gateway, fake_ollama, ollama):
    from tests.conftest import free_port

    dead = start_gateway({"OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    sdk = openai.OpenAI(base_url=dead.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        sdk.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.status_code == 503 and "Ollama backend 'ollama'" in e.value.message

    slow = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_READ_TIMEOUT": "0.3"})
    ollama.script("llama3.2", headers_delay=1.0)
    sdk = openai.OpenAI(base_url=slow.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        sdk.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.status_code == 504 and "Ollama backend 'ollama'" in e.value.message
    with pytest.raises(openai.APIStatusError) as e:
        sdk.chat.completions.create(model="llama3.2", messages=USER, stream=True)
    assert e.value.status_code == 504
