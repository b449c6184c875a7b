"""Aliases: a name callers use served by another model, on every face, per key, and listed."""

from __future__ import annotations

import anthropic
import ollama as ollama_sdk
import openai
import requests

from tests.conftest import API_KEY, wait_until
from tests.routing.conftest import AUTH, access_lines, chat, chats

ALIASES = """
[models."gpt-4o-mini"]
target = "qwen3:8b"
backend = "b"

[models."text-embedding-3-small"]
target = "nomic-embed-text"

[models."claude-*"]
target = "llama3.2"

[models."llama3.2"]
target = "qwen3:8b"
"""


def test_an_alias_is_served_by_another_name_and_echoed_back(routed, ollama, second):
    gw = routed(ALIASES)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        reply = raw.parse()
        assert reply.model == "gpt-4o-mini"  # the caller's name
        assert reply.choices[0].message.content == "Hello from fake Ollama."
        assert raw.headers["X-Relay-Route"] == "b/qwen3:8b"
        assert second.last().body["model"] == "qwen3:8b" and chats(ollama) == 0

        with sdk.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
        ) as streamed:
            assert streamed.headers["X-Relay-Route"] == "b/qwen3:8b"
            chunks = list(streamed.parse())
        assert {c.model for c in chunks} == {"gpt-4o-mini"}

        ollama.script("nomic-embed-text")
        emb = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
        assert emb.parse().model == "text-embedding-3-small"
        assert emb.headers["X-Relay-Route"] == "a/nomic-embed-text"
        assert ollama.last("/api/embed").body["model"] == "nomic-embed-text"

    wait_until(lambda: len(access_lines(gw)) >= 2)
    line = access_lines(gw)[0]
    assert "model=gpt-4o-mini" in line and "backend=b" in line and "route=b/qwen3:8b" in line
    # An alias may shadow a real model name: the alias wins.
    assert chat(gw, "llama3.2").headers["X-Relay-Route"] == "a/qwen3:8b"
    assert ollama.last().body["model"] == "qwen3:8b"


def test_a_caller_named_model_makes_a_valid_route_header(routed, ollama):
    # Without an alias the upstream name is the caller's own text: control characters and
    # non-ASCII in it are percent-encoded, never an invalid header (a 500 found by the fuzzer).
    gw = routed("")
    for model, shown in (("llama3.2\u0007x", "a/llama3.2%07x"), ("llama3.2é", "a/llama3.2%C3%A9")):
        ollama.script(model)
        r = chat(gw, model)
        assert r.status_code == 200, r.text
        assert r.headers["X-Relay-Route"] == shown
        assert ollama.last().body["model"] == model  # the upstream still gets the real name


def test_legacy_completions_and_responses_take_aliases(routed, ollama, second):
    gw = routed(ALIASES)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as sdk:
        done = sdk.completions.with_raw_response.create(model="gpt-4o-mini", prompt="Once")
        assert done.parse().model == "gpt-4o-mini"
        assert done.headers["X-Relay-Route"] == "b/qwen3:8b"
        assert second.last("/api/generate").body["model"] == "qwen3:8b"
        resp = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input="Hi")
        assert resp.parse().model == "gpt-4o-mini"
        assert resp.headers["X-Relay-Route"] == "b/qwen3:8b"


def test_claude_code_names_map_to_a_local_model_on_the_anthropic_face(routed, ollama):
    gw = routed(ALIASES)
    with anthropic.Anthropic(base_url=gw.url, api_key=API_KEY, max_retries=0) as sdk:
        for name in ("claude-sonnet-4-6", "claude-haiku-4-5-20251001"):
            raw = sdk.messages.with_raw_response.create(
                model=name, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
            )
            message = raw.parse()
            assert message.model == name
            assert message.content[0].text == "Hello from fake Ollama."
            assert raw.headers["X-Relay-Route"] == "a/llama3.2"
            assert ollama.last().body["model"] == "llama3.2"
        with sdk.messages.stream(
            model="claude-opus-4-7", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "Hello from fake Ollama." and final.model == "claude-opus-4-7"
        listed = [m.id for m in sdk.models.list()]
        assert "gpt-4o-mini" in listed  # named aliases are listed; globs cannot be


def test_aliases_on_the_ollama_native_face(routed, ollama, second):
    gw = routed(ALIASES)
    with ollama_sdk.Client(host=gw.url, headers=AUTH) as client:
        reply = client.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert reply.model == "gpt-4o-mini" and reply.message.content == "Hello from fake Ollama."
        assert second.last().body["model"] == "qwen3:8b"
        parts = list(
            client.chat(
                model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )
        assert "".join(p.message.content for p in parts) == "Hello from fake Ollama."
        assert ollama.last().body["model"] == "llama3.2"
        generated = client.generate(model="gpt-4o-mini", prompt="Once")
        assert generated.model == "gpt-4o-mini"
        assert second.last("/api/generate").body["model"] == "qwen3:8b"
        names = [m.model for m in client.list().models]
        assert "gpt-4o-mini" in names and len(names) == len(set(names))
        client.show("gpt-4o-mini")  # an alias shows its first target
        assert second.last("/api/show").body["model"] == "qwen3:8b"


def test_models_lists_aliases_per_key_without_duplicates(routed, ollama):
    keys = """
[keys.alice]
env = "ALICE_KEY"
models = ["*"]

[keys.alice.aliases."fast"]
target = "llama3.2"

[keys.bob]
env = "BOB_KEY"
models = ["fast", "llama3.2"]

[models."fast"]
target = "qwen3:8b"
"""
    gw = routed(ALIASES + keys, ALICE_KEY="alice-secret-key", BOB_KEY="bob-secret-key")
    alice = {"Authorization": "Bearer alice-secret-key"}
    bob = {"Authorization": "Bearer bob-secret-key"}

    # Per-key aliases override the global ones of the same name.
    assert chat(gw, "fast", alice).headers["X-Relay-Route"] == "a/llama3.2"
    assert chat(gw, "fast", bob).headers["X-Relay-Route"] == "a/qwen3:8b"

    def listing(headers):
        data = requests.get(gw.url + "/v1/models", headers=headers).json()["data"]
        ids = [m["id"] for m in data]
        assert len(ids) == len(set(ids)), ids  # never duplicates
        return {m["id"]: m for m in data}

    everyone = listing(AUTH)
    assert everyone["gpt-4o-mini"]["relay"] == {"alias_of": ["b/qwen3:8b"]}
    assert everyone["fast"]["relay"] == {"alias_of": ["a/qwen3:8b"]}
    assert everyone["llama3.2"]["relay"] == {"alias_of": ["a/qwen3:8b"]}  # the alias, once
    assert "relay" not in everyone["qwen3:8b"]  # a real model
    assert not any("*" in name for name in everyone)
    assert listing(alice)["fast"]["relay"] == {"alias_of": ["a/llama3.2"]}
    # Only what bob may use (the real `llama3.2:latest` is another name than the alias).
    assert set(listing(bob)) == {"fast", "llama3.2", "llama3.2:latest"}
    one = requests.get(gw.url + "/v1/models/gpt-4o-mini", headers=AUTH).json()
    assert one["id"] == "gpt-4o-mini" and one["relay"]["alias_of"] == ["b/qwen3:8b"]
