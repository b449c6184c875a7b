"""A bounded, seeded fuzz of every JSON route with wrong-typed and out-of-range values.

Each request sets one field (top level or nested where Relay looks) to a hostile value, sent as
raw text so 1e400 and huge integers go over the wire as written. Whatever is sent, the answer
is JSON proper (no NaN/Infinity), an error is OpenAI's envelope with a 4xx (or the documented
upstream 502/503/504), and nothing leaks a traceback.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY, Gateway

# A few hundred requests in all keeps CI fast; raise it by hand for a deeper hunt.
REQUESTS_PER_ROUTE = int(os.environ.get("RELAY_WIRE_FUZZ_REQUESTS", "80"))
UPSTREAM_STATUSES = {502, 503, 504}
HOSTILE = [
    "null", "true", "false", "0", "-1", "1.5", "1e400", "-1E+400", "1e-400", "1" + "0" * 400,
    "-" + "9" * 30, "18446744073709551616", '""', '"x"', '"1e400"', '"\\u0000"', "[]", "[1e400]",
    '[null]', '[[[[["x"]]]]]', "{}", '{"a":1e400}', '{"a":{"b":[1,"x",null]}}', '{"type":null}',
    '{"url":1}', '{"name":1,"arguments":{}}',
]  # fmt: skip
USER = {"role": "user", "content": "Hi"}
ROUTES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "/v1/chat/completions": (
        {"model": "llama3.2", "messages": [USER]},
        ["model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
         "max_completion_tokens", "stop", "seed", "presence_penalty", "frequency_penalty", "n",
         "tools", "tool_choice", "response_format", "reasoning_effort", "reasoning", "user",
         "metadata", "store", "logprobs", "top_logprobs", "parallel_tool_calls", "options",
         "keep_alive", "inputs", "conversation_id", "messages.0", "messages.0.content",
         "messages.0.role", "messages.0.name", "stream_options.include_usage"],
    ),
    "/v1/completions": (
        {"model": "llama3.2", "prompt": "Hi"},
        ["model", "prompt", "suffix", "max_tokens", "stop", "echo", "stream", "stream_options",
         "temperature", "top_p", "seed", "n", "best_of", "logprobs", "user", "options",
         "keep_alive", "raw", "inputs", "conversation_id", "logit_bias"],
    ),
    "/v1/embeddings": (
        {"model": "llama3.2", "input": "Hi"},
        ["model", "input", "encoding_format", "dimensions", "user", "options", "keep_alive",
         "truncate"],
    ),
    "/v1/responses": (
        {"model": "llama3.2", "input": [{"role": "user", "content": "Hi"}]},
        ["model", "input", "instructions", "previous_response_id", "metadata", "temperature",
         "top_p", "max_output_tokens", "tools", "tool_choice", "text", "reasoning", "user",
         "parallel_tool_calls", "stream", "store", "input.0", "input.0.content", "input.0.type",
         "input.0.role", "text.format", "reasoning.effort"],
    ),
    "/v1/images/generations": (
        {"model": "llama3.2", "prompt": "a cat"},
        ["model", "prompt", "n", "size", "response_format", "user", "quality", "style"],
    ),
}  # fmt: skip


def with_value(base: dict[str, Any], path: str, literal: str) -> str:
    """The base body as JSON text with the field at `path` (dots; digits index) set to literal."""
    marker = "__WIRE_FUZZ__"
    body = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    node: Any = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = marker
    else:
        node[last] = marker
    return json.dumps(body).replace(f'"{marker}"', literal)


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a reply: not JSON")

    return json.loads(text, parse_constant=refuse)


def check(reply: requests.Response, sent: str) -> None:
    assert reply.status_code < 500 or reply.status_code in UPSTREAM_STATUSES, (sent, reply.text)
    assert "Traceback" not in reply.text and API_KEY not in reply.text, sent
    if reply.headers.get("Content-Type", "").startswith("text/event-stream"):
        for line in reply.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                strict_json(line[6:])
        return
    parsed = strict_json(reply.text)
    if reply.status_code >= 400:
        assert set(parsed["error"]) == {"message", "type", "param", "code"}, (sent, parsed)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        session.headers["Content-Type"] = "application/json"
        yield session


@pytest.fixture(scope="module")
def other_gateway(start_module_gateway, fake_dify, fake_openai_chat, tmp_path_factory) -> Gateway:
    """Dify apps (chat and completion) and a chat-only OpenAI-compatible upstream."""
    config = tmp_path_factory.mktemp("wire-fuzz") / "relay.toml"
    config.write_text(
        f'[backends.dify]\ntype = "dify"\nurl = "{fake_dify.url}/v1"\n'
        'models = ["chatbot", "writer"]\n'
        '[backends.dify.apps.chatbot]\nkey_env = "FUZZ_CHAT"\n'
        '[backends.dify.apps.writer]\nkey_env = "FUZZ_WRITER"\n'
        f'[backends.chatup]\ntype = "openai"\nurl = "{fake_openai_chat.url}/v1"\n'
        'models = ["gpt-*"]\n'
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    env.update({"FUZZ_CHAT": "app-fuzz-chat", "FUZZ_WRITER": "app-fuzz-w"})
    return start_module_gateway(env)  # type: ignore[no-any-return]


def fuzz(url: str, http: requests.Session, route: str, model: str) -> None:
    base, fields = ROUTES[route]
    base = {**base, "model": model}
    rng = random.Random(f"wire-{route}-{model}")  # derandomized: the same requests every run
    for _ in range(REQUESTS_PER_ROUTE):
        body = with_value(base, rng.choice(fields), rng.choice(HOSTILE))
        check(http.post(url + route, data=body, timeout=10), body)


@pytest.mark.parametrize("route", list(ROUTES))
def test_hostile_values_to_ollama(gateway: Gateway, http, ollama, route):
    fuzz(gateway.url, http, route, "llama3.2")


@pytest.mark.parametrize(
    ("route", "model"),
    [
        ("/v1/chat/completions", "chatbot"),
        ("/v1/completions", "writer"),
        ("/v1/responses", "chatbot"),
        ("/v1/chat/completions", "gpt-test"),
        ("/v1/completions", "gpt-test"),
        ("/v1/responses", "gpt-test"),
        ("/v1/embeddings", "gpt-test"),
        ("/v1/images/generations", "gpt-test"),
    ],
)
def test_hostile_values_to_dify_and_openai_upstreams(
    other_gateway: Gateway, fake_dify, fake_openai_chat, http, route, model
):
    fake_dify.reset()
    fake_openai_chat.reset()
    fake_dify.add_app("app-fuzz-chat", "chat", name="chatbot")
    fake_dify.add_app("app-fuzz-w", "completion", name="writer")
    fuzz(other_gateway.url, http, route, model)
    assert fake_dify.requests or model.startswith("gpt"), "the fuzz never reached Dify"
