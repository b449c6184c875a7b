"""The official `anthropic` SDK, sync and async, against the gateway in front of the fake Ollama."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import anthropic
import requests

from tests.anthropic.conftest import user
from tests.conftest import API_KEY, ROOT
from tests.fakes.ollama import FakeOllama

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image").decode()


def test_create_returns_a_message(claude: anthropic.Anthropic, ollama: FakeOllama):
    msg = claude.messages.create(
        model="llama3.2",
        max_tokens=100,
        system="Be brief.",
        messages=user("Hi"),
        stop_sequences=["END"],
        extra_body={"temperature": 0.5, "top_k": 7, "top_p": 0.9},
    )
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "llama3.2"  # the name the caller asked for
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello from fake Ollama."
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (12, 5)
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    assert msg._request_id and msg._request_id.startswith("req_")
    sent = ollama.last().body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["options"] == {
        "num_predict": 100,
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 7,
    }
    assert "think" not in sent  # no thinking asked: the model's default


def test_async_create_and_stream(gateway, ollama: FakeOllama):
    async def run() -> tuple[anthropic.types.Message, list[str], anthropic.types.Message]:
        async with anthropic.AsyncAnthropic(
            base_url=gateway.url, api_key=API_KEY, max_retries=0
        ) as sdk:
            whole = await sdk.messages.create(model="llama3.2", max_tokens=50, messages=user("a"))
            async with sdk.messages.stream(
                model="llama3.2", max_tokens=50, messages=user("b")
            ) as stream:
                pieces = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
            return whole, pieces, final

    whole, pieces, final = asyncio.run(run())
    assert whole.content[0].text == "Hello from fake Ollama."
    assert pieces == ["Hello", " from", " fake", " Ollama", "."]
    assert final.content[0].text == "Hello from fake Ollama."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 5)


def test_stream_text_and_final_message(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Un", "o ", "dos"])
    with claude.messages.stream(model="llama3.2", max_tokens=50, messages=user("count")) as s:
        assert list(s.text_stream) == ["Un", "o ", "dos"]
        final = s.get_final_message()
    assert final.content[0].text == "Uno dos" and final.model == "llama3.2"
    assert ollama.last().body["stream"] is True


def test_max_tokens_stop_reason(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script("llama3.2", done_reason="length")
    msg = claude.messages.create(model="llama3.2", max_tokens=5, messages=user("long"))
    assert msg.stop_reason == "max_tokens"
    with claude.messages.stream(model="llama3.2", max_tokens=5, messages=user("long")) as s:
        assert s.get_final_message().stop_reason == "max_tokens"


def test_tool_use_round_trip(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script(
        "llama3.2", content=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]
    )
    first = claude.messages.create(
        model="llama3.2", max_tokens=100, tools=[WEATHER], messages=user("Weather in Paris?")
    )
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["tool_use"]  # no empty text block
    call = first.content[0]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    assert ollama.last().body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    ollama.script("llama3.2", content=["It is sunny."])
    answer = claude.messages.create(
        model="llama3.2",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            *user("Weather in Paris?"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "22 C, sunny"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
    )
    assert answer.content[0].text == "It is sunny." and answer.stop_reason == "end_turn"
    sent = ollama.last().body["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert sent[2] == {
        "role": "tool",
        "content": "22 C, sunny",
        "tool_name": "get_weather",
        "tool_call_id": call.id,
    }
    assert sent[3] == {"role": "user", "content": "Thanks"}  # after the tool result


def test_streamed_tool_use_has_its_input(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script(
        "llama3.2",
        content=["Let me check."],
        tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    )
    with claude.messages.stream(
        model="llama3.2", max_tokens=100, tools=[WEATHER], messages=user("Oslo and Rome?")
    ) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [b.input for b in final.content[1:]] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert final.content[1].id != final.content[2].id
    assert final.stop_reason == "tool_use"


def test_tool_result_error_and_blocks(claude: anthropic.Anthropic, ollama: FakeOllama):
    claude.messages.create(
        model="llama3.2",
        max_tokens=100,
        messages=[
            *user("Run it"),
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "run", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "exit 1"}],
                    }
                ],
            },
        ],
    )
    sent = ollama.last().body["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "Error:\nexit 1"
    assert sent[-1]["tool_name"] == "run"


def test_thinking(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script("qwen3", thinking=["Let me ", "think."], content=["42"])
    msg = claude.messages.create(
        model="qwen3",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=user("Answer?"),
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Let me think." and msg.content[0].signature == ""
    assert ollama.last().body["think"] == "medium"
    with claude.messages.stream(
        model="qwen3",
        max_tokens=4096,
        thinking={"type": "adaptive"},
        output_config={"effort": "low"},
        messages=[
            *user("Answer?"),
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            *user("Again"),
        ],
    ) as s:
        final = s.get_final_message()
    assert final.content[0].thinking == "Let me think." and final.content[1].text == "42"
    sent = ollama.last().body
    assert sent["think"] == "low"
    # The thinking sent back is not text the model reads as its answer.
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": "42",
        "thinking": "Let me think.",
    }
    claude.messages.create(
        model="qwen3", max_tokens=10, thinking={"type": "disabled"}, messages=user("x")
    )
    assert ollama.last().body["think"] is False


def test_a_model_that_cannot_think_still_answers(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script("llama3.2", thinking_capable=False)
    msg = claude.messages.create(
        model="llama3.2",
        max_tokens=16000,
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "high"},
        messages=user("hi"),
    )
    assert msg.content[0].text == "Hello from fake Ollama."
    assert "think" not in ollama.last().body  # retried without it


def test_image(claude: anthropic.Anthropic, ollama: FakeOllama):
    msg = claude.messages.create(
        model="llama3.2",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "text",
                        "text": "What is this?",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
    )
    assert msg.content[0].text
    sent = ollama.last().body["messages"][0]
    assert sent == {"role": "user", "content": "What is this?", "images": [PNG]}


def test_errors_are_the_sdk_classes(claude: anthropic.Anthropic, ollama: FakeOllama, gateway):
    try:
        claude.messages.create(model="ghost", max_tokens=5, messages=user("x"))
        raise AssertionError("no error")
    except anthropic.NotFoundError as e:
        assert e.status_code == 404 and e.type == "not_found_error"
        assert e.request_id and e.request_id.startswith("req_")
    try:
        claude.messages.create(model="llama3.2", max_tokens=5, messages=[])
        raise AssertionError("no error")
    except anthropic.BadRequestError as e:
        assert e.type == "invalid_request_error" and "messages" in e.message
    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0) as bad:
        try:
            bad.messages.create(model="llama3.2", max_tokens=5, messages=user("x"))
            raise AssertionError("no error")
        except anthropic.AuthenticationError as e:
            assert e.type == "authentication_error"
            assert e.response.headers["x-should-retry"] == "false"
    ollama.script("llama3.2", status=500, error="runner crashed")
    try:
        claude.messages.create(model="llama3.2", max_tokens=5, messages=user("x"))
        raise AssertionError("no error")
    except anthropic.InternalServerError as e:
        assert e.status_code == 502 and e.type == "api_error"
    try:
        with claude.messages.stream(model="llama3.2", max_tokens=5, messages=user("x")) as s:
            s.get_final_message()
        raise AssertionError("no error")
    except anthropic.InternalServerError as e:  # before the first byte: a real status
        assert e.status_code == 502


def test_midstream_failure_is_an_error_event(claude: anthropic.Anthropic, ollama: FakeOllama):
    ollama.script("llama3.2", midstream_error="model runner has unexpectedly stopped")
    try:
        with claude.messages.stream(model="llama3.2", max_tokens=5, messages=user("x")) as s:
            s.get_final_message()
        raise AssertionError("no error")
    except anthropic.APIStatusError as e:
        assert e.type == "api_error" and "unexpectedly stopped" in e.message


def test_both_key_headers(gateway, ollama: FakeOllama):
    """x-api-key (SDK 1.x, Claude Code's ANTHROPIC_API_KEY) and Bearer (SDK 2.x, AUTH_TOKEN)."""
    with anthropic.Anthropic(base_url=gateway.url, auth_token=API_KEY, max_retries=0) as sdk:
        assert sdk.messages.create(model="llama3.2", max_tokens=5, messages=user("x")).content
    body = {"model": "llama3.2", "max_tokens": 5, "messages": user("x")}
    r = requests.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})
    assert r.status_code == 200 and r.json()["type"] == "message"
    # A stale Anthropic key in x-api-key does not lock out a valid Bearer token.
    r = requests.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={"x-api-key": "sk-ant-stale", "Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_count_tokens(claude: anthropic.Anthropic, ollama: FakeOllama):
    small = claude.messages.count_tokens(model="llama3.2", messages=user("Hello there"))
    bigger = claude.messages.count_tokens(
        model="llama3.2",
        system="You are a careful assistant. " * 20,
        tools=[WEATHER],
        messages=user("Hello there"),
    )
    assert 0 < small.input_tokens < bigger.input_tokens
    assert (
        bigger.input_tokens - small.input_tokens >= len("You are a careful assistant. " * 20) // 4
    )
    assert not [r for r in ollama.requests if r.path == "/api/chat"]  # no model was called


def test_models(claude: anthropic.Anthropic, ollama: FakeOllama, http):
    page = claude.models.list()
    ids = [m.id for m in page]
    assert ids == ["llama3.2:latest", "qwen3:8b"]
    assert page.has_more is False and page.data[0].type == "model"
    one = claude.models.retrieve("qwen3:8b")
    assert one.id == "qwen3:8b" and one.display_name == "qwen3:8b"
    assert one.created_at.year >= 2025
    try:
        claude.models.retrieve("ghost")
        raise AssertionError("no error")
    except anthropic.NotFoundError as e:
        assert e.type == "not_found_error"
    # Without anthropic-version: OpenAI's shape, as before.
    openai_shape = http.get(claude.base_url.__str__().rstrip("/") + "/v1/models").json()
    assert openai_shape["object"] == "list" and openai_shape["data"][0]["object"] == "model"


def test_unknown_fields_and_betas_are_ignored(claude: anthropic.Anthropic, ollama: FakeOllama):
    msg = claude.beta.messages.create(
        model="llama3.2",
        max_tokens=10,
        messages=user("x"),
        betas=["claude-code-20250219", "some-future-beta-2099-01-01"],
        extra_body={
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "service_tier": "auto",
            "speed": "fast",
            "mcp_servers": [],
        },
    )
    assert msg.content[0].text
    sent = ollama.last().body
    assert not {"context_management", "service_tier", "speed", "mcp_servers"} & set(sent)
    assert json.dumps(sent).count("future-beta") == 0


def test_the_docs_python_example_runs(gateway, ollama: FakeOllama, capsys):
    page = (ROOT / "docs" / "anthropic.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "Anthropic(" in b
    ]
    source = block.replace("http://127.0.0.1:3000", gateway.url)
    exec(compile(source.replace("sk-team-a-3c1f9e27d4", API_KEY), "docs/anthropic.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Hello from fake Ollama." in out and out.rstrip().endswith("end_turn")
