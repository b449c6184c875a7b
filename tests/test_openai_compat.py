"""OpenAI-compatible upstreams behind the gateway: a chat-only one passed through, a
Responses-only one converted both ways; the official SDK as the client."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEY, free_port
from tests.fakes.openai_upstream import Reply
from tests.test_chat_sdk import USER, WEATHER_TOOL

UPSTREAM_KEY = "sk-upstream-secret-7a1c"
TOOL_REPLY = Reply(
    content=[],
    tool_calls=[
        {"name": "get_weather", "arguments": ['{"city":', ' "Paris"}']},
        {"name": "get_time", "arguments": ["{}"]},
    ],
)
# model name -> the fake it reaches
BOTH = ["gpt-test", "resp-test"]


@pytest.fixture(scope="module")
def chat_up(fake_openai_chat):
    return fake_openai_chat


@pytest.fixture(scope="module")
def resp_up(fake_openai_responses):
    return fake_openai_responses


@pytest.fixture(scope="module")
def compat_gateway(start_module_gateway, chat_up, resp_up, tmp_path_factory):
    config = tmp_path_factory.mktemp("compat") / "relay.toml"
    config.write_text(
        f"""
[backends.chatup]
type = "openai"
url = "{chat_up.url}/v1"
key_env = "CHATUP_KEY"
models = ["gpt-*"]

[backends.respup]
type = "openai"
url = "{resp_up.url}/v1/"
api = "responses"
models = ["resp-*"]

[backends.slow]
type = "openai"
url = "{chat_up.url}/v1"
models = ["slow-*"]
read_timeout = 0.3

[backends.gone]
type = "openai"
url = "http://127.0.0.1:{free_port()}/v1"
models = ["gone-*"]
"""
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "CHATUP_KEY": UPSTREAM_KEY}
    env["RELAY_CACHE_TTL"] = "0"  # the tests script different replies to the same request
    return start_module_gateway(env)


@pytest.fixture
def sdk(compat_gateway, chat_up, resp_up):
    chat_up.reset()
    resp_up.reset()
    with openai.OpenAI(base_url=compat_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def upstream_body(model, chat_up, resp_up):
    if model.startswith("gpt"):
        return chat_up.last("/v1/chat/completions").body
    return resp_up.last("/v1/responses").body


def set_reply(reply, *fakes):
    for fake in fakes:
        fake.reply = reply


# --- chat pass-through -------------------------------------------------------------------


def test_chat_passes_through_with_unknown_fields_and_the_upstream_key(sdk, chat_up):
    reply = sdk.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "Be brief"}, *USER],
        temperature=0.3,
        max_tokens=50,
        seed=7,
        extra_body={"top_k": 5, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}},
    )
    assert reply.choices[0].message.content == "Hello from upstream."
    assert reply.model == "gpt-test"
    sent = chat_up.last("/v1/chat/completions")
    assert sent.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hi"},
        ],
        "stream": False,
        "temperature": 0.3,
        "max_tokens": 50,  # under the name the caller used
        "seed": 7,
        "top_k": 5,
        "repetition_penalty": 1.1,
        "chat_template_kwargs": {"x": 1},
    }
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert all(API_KEY not in v for v in sent.headers.values())


def test_chat_stream_passes_through_chunk_by_chunk_with_usage(sdk, chat_up):
    chat_up.reply = Reply(content=["A", "B", "C"], cached_tokens=3, reasoning_tokens=2)
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-test",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"min_p": 0.1},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["A", "B", "C"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 4)
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details.reasoning_tokens == 2
    sent = chat_up.last("/v1/chat/completions").body
    assert sent["min_p"] == 0.1 and sent["stream"] is True


def test_upstream_models_are_listed(sdk):
    ids = {m.id for m in sdk.models.list()}
    assert {"gpt-test", "gpt-test-mini"} <= ids


# --- both upstream kinds ------------------------------------------------------------------


@pytest.mark.parametrize("model", BOTH)
def test_tool_calls_come_back_whole(sdk, chat_up, resp_up, model):
    set_reply(TOOL_REPLY, chat_up, resp_up)
    reply = sdk.chat.completions.create(model=model, messages=USER, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls]
    assert calls == [("call_0", "get_weather", '{"city": "Paris"}'), ("call_1", "get_time", "{}")]


@pytest.mark.parametrize("model", BOTH)
def test_tool_calls_stream_as_argument_deltas(sdk, chat_up, resp_up, model):
    set_reply(TOOL_REPLY, chat_up, resp_up)
    with sdk.chat.completions.stream(model=model, messages=USER, tools=[WEATHER_TOOL]) as stream:
        deltas = [
            tc
            for event in stream
            if event.type == "chunk" and event.chunk.choices
            for tc in event.chunk.choices[0].delta.tool_calls or []
        ]
        final = stream.get_final_completion()
    assert [d.function.arguments for d in deltas if d.index == 0] == ["", '{"city":', ' "Paris"}']
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_0", "get_weather", '{"city": "Paris"}'),
        ("call_1", "get_time", "{}"),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


class Weather(BaseModel):
    city: str
    temperature: int


@pytest.mark.parametrize("model", BOTH)
def test_structured_output_parses(sdk, chat_up, resp_up, model):
    set_reply(Reply(content=['{"city": "Paris",', ' "temperature": 21}']), chat_up, resp_up)
    parsed = sdk.chat.completions.parse(model=model, messages=USER, response_format=Weather)
    assert parsed.choices[0].message.parsed == Weather(city="Paris", temperature=21)
    sent = upstream_body(model, chat_up, resp_up)
    if model.startswith("resp"):
        fmt = sent["text"]["format"]
        assert (fmt["type"], fmt["name"], fmt["strict"]) == ("json_schema", "Weather", True)
        assert fmt["schema"]["properties"]["city"] == {"title": "City", "type": "string"}
    else:
        assert sent["response_format"]["json_schema"]["name"] == "Weather"


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_effort_goes_up_and_reasoning_comes_back(sdk, chat_up, resp_up, model, stream):
    set_reply(Reply(reasoning=["Think", "ing"], content=["Done"]), chat_up, resp_up)
    reply = sdk.chat.completions.create(
        model=model, messages=USER, reasoning_effort="high", stream=stream
    )
    if stream:
        chunks = [c.choices[0].delta for c in reply if c.choices]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in chunks)
        content = "".join(d.content or "" for d in chunks)
    else:
        reasoning = reply.choices[0].message.reasoning_content
        content = reply.choices[0].message.content
    assert (reasoning, content) == ("Thinking", "Done")
    sent = upstream_body(model, chat_up, resp_up)
    if model.startswith("resp"):
        assert sent["reasoning"] == {"effort": "high"}
    else:
        assert sent["reasoning_effort"] == "high"


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize("stream", [False, True])
def test_refusals_come_back_as_refusal(sdk, chat_up, resp_up, model, stream):
    set_reply(Reply(content=[], refusal=["I can't", " help."]), chat_up, resp_up)
    reply = sdk.chat.completions.create(model=model, messages=USER, stream=stream)
    if stream:
        refusal = "".join(c.choices[0].delta.refusal or "" for c in reply if c.choices)
    else:
        refusal = reply.choices[0].message.refusal
        assert reply.choices[0].message.content is None
    assert refusal == "I can't help."


@pytest.mark.parametrize("model", BOTH)
def test_usage_details_and_length_finish(sdk, chat_up, resp_up, model):
    set_reply(Reply(incomplete=True, cached_tokens=5, reasoning_tokens=3), chat_up, resp_up)
    reply = sdk.chat.completions.create(model=model, messages=USER, max_completion_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens_details.cached_tokens == 5
    assert reply.usage.completion_tokens_details.reasoning_tokens == 3
    assert reply.usage.total_tokens == 13
    streamed = list(
        sdk.chat.completions.create(
            model=model, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"
    assert streamed[-1].usage.completion_tokens_details.reasoning_tokens == 3


# --- the Responses conversion, request side -----------------------------------------------


def test_chat_history_becomes_responses_items(sdk, resp_up):
    image = "data:image/png;base64,iVBORw0KGgo="
    sdk.chat.completions.create(
        model="resp-test",
        messages=[
            {"role": "system", "content": "Be brief"},
            {"role": "developer", "content": "Use metric"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "21C"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_completion_tokens=99,
        temperature=0.5,
        extra_body={"metadata": {"team": "a"}},
    )
    sent = resp_up.last("/v1/responses")
    assert sent.headers.get("Authorization") is None  # no key configured for this upstream
    body = sent.body
    assert body["instructions"] == "Be brief\n\nUse metric"
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather here?"},
                {"type": "input_image", "image_url": image, "detail": "auto"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_9",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_9", "output": "21C"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather",
            "parameters": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert (body["max_output_tokens"], body["temperature"]) == (99, 0.5)
    assert body["metadata"] == {"team": "a"} and body["store"] is False
    assert not [r for r in resp_up.requests if r.path == "/v1/chat/completions"]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", BOTH)
def test_upstream_4xx_keeps_its_status_and_fields(sdk, chat_up, resp_up, model):
    error = {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature"}
    set_reply(Reply(status=422, error={**error, "code": "invalid_value"}), chat_up, resp_up)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        sdk.chat.completions.create(model=model, messages=USER)
    assert e.value.status_code == 422
    assert (e.value.param, e.value.code) == ("temperature", "invalid_value")
    assert "bad temperature" in e.value.message and "OpenAI-compatible backend" in e.value.message


def test_upstream_model_not_found_is_a_404(sdk, chat_up):
    error = {"message": "no such model", "type": "invalid_request_error", "code": "model_not_found"}
    chat_up.reply = Reply(status=404, error=error)
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    assert e.value.code == "model_not_found" and "chatup" in e.value.message


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_5xx_is_a_502_naming_the_backend(sdk, chat_up, status):
    chat_up.reply = Reply(status=status)
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="gpt-test", messages=USER)
    assert e.value.status_code == 502 and "'chatup'" in e.value.message


def test_upstream_refusing_the_gateway_key_is_not_the_callers_401(sdk, chat_up):
    chat_up.reply = Reply(status=401, error={"message": "Incorrect API key provided: sk-up..."})
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="gpt-test", messages=USER)
    assert e.value.status_code == 502 and "refused the gateway's key" in e.value.message
    assert UPSTREAM_KEY not in json.dumps(e.value.body)


def test_unreachable_upstream_is_a_503(sdk):
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="gone-1", messages=USER)
    assert e.value.status_code == 503 and "'gone'" in e.value.message


@pytest.mark.parametrize("model", BOTH)
def test_failure_mid_stream_ends_with_an_error_frame(sdk, chat_up, resp_up, model):
    set_reply(Reply(midstream_error="engine overloaded"), chat_up, resp_up)
    with pytest.raises(openai.APIError) as e:
        list(sdk.chat.completions.create(model=model, messages=USER, stream=True))
    assert "engine overloaded" in e.value.message


def test_slow_upstream_is_a_504(sdk, chat_up):
    chat_up.reply = Reply(delay=1.0)
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="slow-1", messages=USER)
    assert e.value.status_code == 504 and "'slow'" in e.value.message


def test_the_upstream_key_never_reaches_the_logs(sdk, compat_gateway, chat_up):
    sdk.chat.completions.create(model="gpt-test", messages=USER)
    assert chat_up.last("/v1/chat/completions").headers["Authorization"].endswith(UPSTREAM_KEY)
    assert UPSTREAM_KEY not in compat_gateway.logs()


def test_embeddings_through_a_compat_upstream_default_base64_and_float(compat_gateway, chat_up):
    with openai.OpenAI(base_url=compat_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        default = c.embeddings.create(model="gpt-embed", input=["ab", "abcd"], dimensions=3)
        floats = c.embeddings.create(model="gpt-embed", input="ab", encoding_format="float")
    assert [round(x, 4) for x in default.data[1].embedding] == [0.4, 0.5, -0.25]
    assert default.data[0].index == 0 and default.usage.prompt_tokens == 6
    assert floats.data[0].embedding == [0.2, 0.5, -0.25]
    sent = chat_up.last("/v1/embeddings")
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body["encoding_format"] == "float" and sent.body["input"] == ["ab"]
