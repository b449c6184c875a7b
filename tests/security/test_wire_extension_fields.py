"""Optional fields Relay or a backend reads with an assumed type: a wrong type is a 400 naming
the field on every route that takes it, never a 500 or an upstream's error; null means absent.

Real HTTP to a real gateway: Ollama routes through the shared gateway, Dify's `inputs` and
`conversation_id` through a gateway in front of the fake Dify.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY, Gateway
from tests.fakes.dify import FakeDify

USER_MSG = [{"role": "user", "content": "Hi"}]
ROUTE_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "llama3.2", "messages": USER_MSG},
    "/v1/completions": {"model": "llama3.2", "prompt": "Hi"},
    "/v1/embeddings": {"model": "llama3.2", "input": "Hi"},
    "/v1/responses": {"model": "llama3.2", "input": "Hi"},
    "/v1/images/generations": {"model": "llama3.2", "prompt": "a cat"},
}
CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, IMAGES = ROUTE_BODIES
NESTED = {"a": {"b": {"c": [1, "x"]}}}
NOT_STRING = [1, 1.5, True, [], ["a"], {"a": "b"}, NESTED]
NOT_BOOL = ["true", "false", 1, 0, [], [True], {"a": True}, NESTED]
NOT_OBJECT = ["x", "", 1, 0, 1.5, True, False, [], [{"a": 1}]]
BAD_METADATA = [
    *NOT_OBJECT,
    {"a": 1},
    {"a": 1.5},
    {"a": True},
    {"a": None},
    {"a": ["b"]},
    NESTED,
    {f"k{i}": "v" for i in range(17)},  # OpenAI allows 16 pairs
    {"k" * 65: "v"},
    {"k": "v" * 513},
]
BAD_KEEP_ALIVE = [True, [], ["5m"], {"a": "5m"}, NESTED, 2**64]
BAD_TOP_LOGPROBS = [-1, 21, "3", 1.5, True, [], {"a": 1}]

# field -> (the wrong values to try, the routes that read or pass it on)
FIELDS: dict[str, tuple[list[Any], tuple[str, ...]]] = {
    "user": (NOT_STRING, (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, IMAGES)),
    "metadata": (BAD_METADATA, (CHAT, COMPLETIONS, RESPONSES)),
    "store": (NOT_BOOL, (CHAT, COMPLETIONS, RESPONSES)),
    "parallel_tool_calls": (NOT_BOOL, (CHAT, RESPONSES)),
    "logprobs": (NOT_BOOL, (CHAT,)),
    "top_logprobs": (BAD_TOP_LOGPROBS, (CHAT,)),
    "conversation_id": (NOT_STRING, (CHAT, COMPLETIONS)),
    "inputs": (NOT_OBJECT, (CHAT, COMPLETIONS)),
    "options": (NOT_OBJECT, (CHAT, COMPLETIONS, EMBEDDINGS)),
    "keep_alive": (BAD_KEEP_ALIVE, (CHAT, COMPLETIONS, EMBEDDINGS)),
    "raw": (NOT_BOOL, (COMPLETIONS,)),
    "truncate": (NOT_BOOL, (EMBEDDINGS,)),
}
CASES = [(field, route) for field, (_, routes) in FIELDS.items() for route in routes]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        yield session


def assert_invalid(reply: requests.Response, param: str, sent: Any) -> None:
    assert reply.status_code == 400, (sent, reply.status_code, reply.text[:300])
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, (sent, error)
    assert "Traceback" not in reply.text


@pytest.mark.parametrize(("field", "route"), CASES)
def test_a_wrong_type_is_a_400_naming_the_field(gateway: Gateway, http, field, route):
    wrong_values, _ = FIELDS[field]
    for value in wrong_values:
        body = {**ROUTE_BODIES[route], field: value}
        assert_invalid(http.post(gateway.url + route, json=body, timeout=10), field, value)


def assert_passed_parsing(reply: requests.Response, route: str) -> None:
    # Images have no backend on this gateway: its 400 names `model`, so the field was accepted.
    if route != IMAGES or reply.status_code != 400:
        assert reply.status_code == 200, reply.text[:300]
    else:
        assert reply.status_code == 400, reply.text[:300]
        assert reply.json()["error"]["param"] == "model", reply.text[:300]


@pytest.mark.parametrize(("field", "route"), CASES)
def test_null_is_the_same_as_leaving_the_field_out(gateway: Gateway, http, ollama, field, route):
    reply = http.post(gateway.url + route, json={**ROUTE_BODIES[route], field: None}, timeout=10)
    assert_passed_parsing(reply, route)
    if route == CHAT and field == "keep_alive":
        assert "keep_alive" not in ollama.last("/api/chat").body  # null is not sent on


def test_well_typed_ollama_fields_still_reach_ollama(gateway: Gateway, http, ollama):
    body = {**ROUTE_BODIES[CHAT], "options": {"num_ctx": 4096}, "keep_alive": "5m", "user": "u1"}
    reply = http.post(gateway.url + CHAT, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    sent = ollama.last("/api/chat").body
    assert sent["options"]["num_ctx"] == 4096
    assert sent["keep_alive"] == "5m"
    body = {**ROUTE_BODIES[COMPLETIONS], "keep_alive": 300, "raw": False}
    assert http.post(gateway.url + COMPLETIONS, json=body, timeout=10).status_code == 200
    sent = ollama.last("/api/generate").body
    assert (sent["keep_alive"], sent["raw"]) == (300, False)


# --- Dify: `inputs` and `conversation_id` are read by the backend itself ---------------------

DIFY_APPS = {
    "chatbot": ("app-wire-chat-key", "chat"),
    "writer": ("app-wire-writer-key", "completion"),
}


@pytest.fixture(scope="module")
def dify_gateway(start_module_gateway, fake_dify: FakeDify, tmp_path_factory) -> Gateway:
    lines = ["[backends.dify]", 'type = "dify"', f'url = "{fake_dify.url}/v1"']
    for app in DIFY_APPS:
        lines += [f'[backends.dify.apps."{app}"]', f'key_env = "WIRE_DIFY_{app.upper()}"']
    config = tmp_path_factory.mktemp("wire-dify") / "dify.toml"
    config.write_text("\n".join(lines) + "\n")
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    env.update({f"WIRE_DIFY_{app.upper()}": key for app, (key, _) in DIFY_APPS.items()})
    return start_module_gateway(env)  # type: ignore[no-any-return]


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    fake_dify.reset()
    for name, (key, mode) in DIFY_APPS.items():
        fake_dify.add_app(key, mode, name=name)
    return fake_dify


DIFY_ROUTES = [
    ("/v1/chat/completions", {"model": "chatbot", "messages": USER_MSG}),
    ("/v1/chat/completions", {"model": "chatbot", "messages": USER_MSG, "stream": True}),
    ("/v1/completions", {"model": "writer", "prompt": "Hi"}),
    ("/v1/completions", {"model": "writer", "prompt": "Hi", "stream": True}),
]


@pytest.mark.parametrize(("route", "base"), DIFY_ROUTES)
def test_dify_inputs_not_an_object_is_a_400_not_a_500(dify_gateway, dify, http, route, base):
    for value in NOT_OBJECT:
        reply = http.post(dify_gateway.url + route, json={**base, "inputs": value}, timeout=10)
        assert_invalid(reply, "inputs", value)
    for value in NOT_STRING:
        body = {**base, "conversation_id": value}
        assert_invalid(
            http.post(dify_gateway.url + route, json=body, timeout=10), "conversation_id", value
        )
    assert not [r for r in dify.requests if r.method == "POST"]  # nothing reached Dify


@pytest.mark.parametrize(("route", "base"), DIFY_ROUTES)
def test_dify_inputs_object_or_null_still_work(dify_gateway, dify, http, route, base):
    body = {**base, "inputs": {"tone": "dry", "n": 3, "deep": {"x": [1]}}}
    reply = http.post(dify_gateway.url + route, json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    path = "/v1/chat-messages" if base["model"] == "chatbot" else "/v1/completion-messages"
    assert dify.last(path).body["inputs"]["tone"] == "dry"
    reply = http.post(dify_gateway.url + route, json={**base, "inputs": None}, timeout=10)
    assert reply.status_code == 200, reply.text


# --- nested and Responses-only fields that were silently dropped when mistyped ---------------

TOOL_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": "42"},
]  # fmt: skip
NESTED_CASES = [
    (CHAT, "stream_options.include_usage", NOT_BOOL,
     lambda v: {"stream": True, "stream_options": {"include_usage": v}}),
    (COMPLETIONS, "stream_options.include_usage", NOT_BOOL,
     lambda v: {"stream": True, "stream_options": {"include_usage": v}}),
    (CHAT, "stream_options", NOT_OBJECT, lambda v: {"stream_options": v}),
    (CHAT, "messages[0].name", NOT_STRING,
     lambda v: {"messages": [{"role": "user", "content": "Hi", "name": v}]}),
    (CHAT, "messages[2].tool_call_id", NOT_STRING,
     lambda v: {"messages": [*TOOL_TURN[:2], {**TOOL_TURN[2], "tool_call_id": v}]}),
    (RESPONSES, "text", NOT_OBJECT, lambda v: {"text": v}),
    (RESPONSES, "reasoning", NOT_OBJECT, lambda v: {"reasoning": v}),
]  # fmt: skip


@pytest.mark.parametrize(("route", "param", "wrong_values", "fields"), NESTED_CASES)
def test_a_wrong_type_deeper_in_is_a_400_too(
    gateway: Gateway, http, route, param, wrong_values, fields
):
    for value in wrong_values:
        body = {**ROUTE_BODIES[route], **fields(value)}
        assert_invalid(http.post(gateway.url + route, json=body, timeout=10), param, value)
    ok = {**ROUTE_BODIES[route], **fields(None)}
    assert http.post(gateway.url + route, json=ok, timeout=10).status_code == 200
