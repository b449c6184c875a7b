"""The official `ollama` Python client, written once and run against two targets: the fake
Ollama called directly, and Relay in front of it. What the client sees, and what reaches
Ollama, must be the same both ways: the face is faithful."""

from __future__ import annotations

import asyncio
import base64

import httpx
import ollama as ollama_sdk
import pytest

from tests.fakes.ollama import EMBED_DIMENSIONS, FakeOllama, fake_embedding

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
OPTIONS = {
    "temperature": 0.3,
    "top_p": 0.8,
    "top_k": 20,
    "num_ctx": 8192,
    "num_predict": 64,
    "seed": 7,
    "stop": ["\n\n"],
    "repeat_penalty": 1.1,
    "min_p": 0.05,
}


def client(target) -> ollama_sdk.Client:
    return ollama_sdk.Client(host=target.host, headers=target.headers)


def async_client(target) -> ollama_sdk.AsyncClient:
    return ollama_sdk.AsyncClient(host=target.host, headers=target.headers)


# --- chat ---------------------------------------------------------------------------------


def test_chat_whole_sends_every_option_on(target, ollama: FakeOllama):
    with client(target) as c:
        reply = c.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "Hi"}],
            options=OPTIONS,
            keep_alive="10m",
        )
    assert reply.message.role == "assistant"
    assert reply.message.content == "Hello from fake Ollama."
    assert reply.done is True and reply.done_reason == "stop"
    assert reply.prompt_eval_count == 12 and reply.eval_count == 5
    assert reply.total_duration and reply.total_duration > 0
    sent = ollama.last().body
    assert sent["options"] == OPTIONS
    assert sent["keep_alive"] == "10m"
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent["stream"] is False


def test_chat_stream(target, ollama: FakeOllama):
    with client(target) as c:
        parts = list(
            c.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}], stream=True)
        )
    assert "".join(p.message.content or "" for p in parts) == "Hello from fake Ollama."
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "stop"
    assert parts[-1].eval_count == 5 and parts[-1].prompt_eval_count == 12
    assert ollama.last().body["stream"] is True


def test_chat_tools_round_trip(target, ollama: FakeOllama):
    ollama.script(
        "llama3.2", content=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]
    )
    with client(target) as c:
        first = c.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
        )
        calls = first.message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert calls[0].function.arguments == {"city": "Paris"}
        assert first.done_reason == "stop"  # Ollama has no tool_calls done reason
        assert ollama.last().body["tools"] == [WEATHER]
        ollama.script("llama3.2", content=["It is 11 degrees."])
        second = c.chat(
            model="llama3.2",
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                first.message,
                {"role": "tool", "tool_name": "get_weather", "content": "11 degrees"},
            ],
            tools=[WEATHER],
        )
    assert second.message.content == "It is 11 degrees."
    sent = ollama.last().body["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert sent[2]["role"] == "tool" and sent[2]["tool_name"] == "get_weather"
    assert sent[2]["content"] == "11 degrees"


def test_chat_thinking_levels(target, ollama: FakeOllama):
    ollama.script("qwen3:8b", thinking=["Let me", " think."], content=["42"])
    with client(target) as c:
        whole = c.chat(
            model="qwen3:8b", messages=[{"role": "user", "content": "Answer?"}], think="high"
        )
        assert ollama.last().body["think"] == "high"
        streamed = list(
            c.chat(
                model="qwen3:8b",
                messages=[{"role": "user", "content": "Answer?"}],
                think=True,
                stream=True,
            )
        )
        assert ollama.last().body["think"] is True
    assert whole.message.thinking == "Let me think." and whole.message.content == "42"
    assert "".join(p.message.thinking or "" for p in streamed) == "Let me think."
    assert "".join(p.message.content or "" for p in streamed) == "42"


def test_chat_images_reach_ollama_byte_for_byte(target, ollama: FakeOllama):
    with client(target) as c:
        c.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "What is this?", "images": [PNG]}],
        )
    sent = ollama.last().body["messages"][0]
    assert sent["images"] == [base64.b64encode(PNG).decode()]
    assert sent["content"] == "What is this?"


def test_chat_format_json_and_schema(target, ollama: FakeOllama):
    with client(target) as c:
        c.chat(model="llama3.2", messages=[{"role": "user", "content": "JSON"}], format="json")
        assert ollama.last().body["format"] == "json"
        c.chat(model="llama3.2", messages=[{"role": "user", "content": "JSON"}], format=SCHEMA)
        assert ollama.last().body["format"] == SCHEMA


def test_unknown_model_is_404(target, ollama: FakeOllama):
    with client(target) as c, pytest.raises(ollama_sdk.ResponseError) as caught:
        c.chat(model="nope:1b", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 404
    assert "nope:1b" in caught.value.error


# --- generate -----------------------------------------------------------------------------


def test_generate_whole_with_system_and_images(target, ollama: FakeOllama):
    with client(target) as c:
        reply = c.generate(
            model="llama3.2",
            prompt="Describe",
            system="Be brief.",
            images=[PNG],
            options={"temperature": 0.1, "num_ctx": 4096},
            keep_alive=0,
        )
    assert reply.response == "Hello from fake Ollama."
    assert reply.done and reply.done_reason == "stop" and reply.eval_count == 5
    sent = ollama.last("/api/generate").body
    assert sent["prompt"] == "Describe" and sent["system"] == "Be brief."
    assert sent["images"] == [base64.b64encode(PNG).decode()]
    assert sent["options"] == {"temperature": 0.1, "num_ctx": 4096}
    assert sent["keep_alive"] == 0
    assert "raw" not in sent  # the model's template applies, as Ollama does by default


def test_generate_stream_raw_and_suffix(target, ollama: FakeOllama):
    with client(target) as c:
        parts = list(
            c.generate(model="llama3.2", prompt="[INST] hi [/INST]", raw=True, stream=True)
        )
        assert ollama.last("/api/generate").body["raw"] is True
        c.generate(model="llama3.2", prompt="def add(a, b):", suffix="    return c")
        assert ollama.last("/api/generate").body["suffix"] == "    return c"
    assert "".join(p.response for p in parts) == "Hello from fake Ollama."
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_generate_thinking_and_format(target, ollama: FakeOllama):
    ollama.script("qwen3:8b", thinking=["Hmm."], content=['{"name": "Ann", "age": 3}'])
    with client(target) as c:
        reply = c.generate(model="qwen3:8b", prompt="A person", think="low", format=SCHEMA)
    assert reply.thinking == "Hmm." and reply.response == '{"name": "Ann", "age": 3}'
    sent = ollama.last("/api/generate").body
    assert sent["think"] == "low" and sent["format"] == SCHEMA


# --- embeddings ---------------------------------------------------------------------------


def test_embed_and_legacy_embeddings(target, ollama: FakeOllama):
    ollama.script("nomic-embed-text")
    with client(target) as c:
        many = c.embed(model="nomic-embed-text", input=["one", "two"], truncate=True)
        assert ollama.last("/api/embed").body["truncate"] is True
        legacy = c.embeddings(model="nomic-embed-text", prompt="one")
    assert [list(v) for v in many.embeddings] == [fake_embedding("one"), fake_embedding("two")]
    assert len(many.embeddings[0]) == EMBED_DIMENSIONS
    assert many.prompt_eval_count == 2
    assert list(legacy.embedding) == pytest.approx(fake_embedding("one"))


# --- model information --------------------------------------------------------------------


def test_tags_show_ps_version(target, ollama: FakeOllama):
    with client(target) as c:
        tags = {m.model: m for m in c.list().models}
        shown = c.show("llama3.2")
        running = {m.model for m in c.ps().models}
    assert {"llama3.2:latest", "qwen3:8b"} <= set(tags)
    assert tags["llama3.2:latest"].size == 2019393189
    assert tags["llama3.2:latest"].details.quantization_level == "Q4_K_M"
    assert shown.capabilities and "completion" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] == 131072
    assert {"llama3.2:latest", "qwen3:8b"} <= running
    version = httpx.get(target.host + "/api/version", headers=target.headers)
    assert version.status_code == 200 and version.json() == {"version": "0.33.0"}


# --- the async client ---------------------------------------------------------------------


def test_async_client_chat_generate_embed(target, ollama: FakeOllama):
    ollama.script("nomic-embed-text")

    async def run():
        async with async_client(target) as c:
            whole = await c.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
            text = ""
            async for part in await c.chat(
                model="llama3.2", messages=[{"role": "user", "content": "Hi"}], stream=True
            ):
                text += part.message.content or ""
            generated = await c.generate(model="llama3.2", prompt="Hi")
            embedded = await c.embed(model="nomic-embed-text", input="one")
            listed = await c.list()
            return whole, text, generated, embedded, listed

    whole, text, generated, embedded, listed = asyncio.run(run())
    assert whole.message.content == text == generated.response == "Hello from fake Ollama."
    assert list(embedded.embeddings[0]) == fake_embedding("one")
    assert "llama3.2:latest" in {m.model for m in listed.models}
