"""Open WebUI's requests replayed through the gateway (issue 12, findings 9 and 10).

Open WebUI itself is not installed here (about 3 GB); it was run by hand against Relay
(docs/development.md "Tests"). These tests send the requests it sends on an OpenAI connection:
an OpenAI chat request, streamed, carrying its built-in tools (28 to 36 of them) and its model
settings as top-level fields, the Ollama ones included.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama

# The Ollama-specific settings of Open WebUI's "Advanced Params", as it sends them on an
# OpenAI connection: top-level fields, cast by Open WebUI (ints as ints, floats as floats).
WEBUI_OLLAMA_SETTINGS: dict[str, Any] = {
    "num_ctx": 8192,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "mirostat": 0,
    "mirostat_eta": 0.1,
    "mirostat_tau": 5.0,
    "tfs_z": 1.0,
    "num_batch": 512,
    "num_keep": 24,
    "num_thread": 4,
    "num_gpu": -1,
    "use_mmap": True,
    "use_mlock": False,
    "think": True,
    "format": "json",
}
OPTION_NAMES = [n for n in WEBUI_OLLAMA_SETTINGS if n not in ("think", "format")]


def webui_tools(count: int = 30) -> list[dict[str, Any]]:
    """Tools shaped like Open WebUI's built-in ones (web search, notes, memory, knowledge...)."""
    names = [
        "search_web",
        "fetch_url",
        "get_current_timestamp",
        "search_knowledge_bases",
        "query_knowledge_files",
        "view_knowledge_file",
        "search_notes",
        "view_note",
        "write_note",
        "search_chats",
        "view_chat",
        "search_memories",
        "add_memory",
        "replace_memory_content",
        "generate_image",
        "execute_code",
    ]
    tools = []
    for i in range(count):
        name = names[i] if i < len(names) else f"{names[i % len(names)]}_{i}"
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"Built-in tool {name}.",
                    "parameters": {
                        "type": "object",
                        "properties": {"query": {"type": "string", "description": "What to do"}},
                        "required": ["query"],
                    },
                },
            }
        )
    return tools


def webui_body(model: str, **more: Any) -> dict[str, Any]:
    """A chat request as Open WebUI sends it from its chat page on an OpenAI connection."""
    body: dict[str, Any] = {
        "stream": True,
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello, who are you?"},
        ],
        "tools": webui_tools(),
        "stream_options": {"include_usage": True},
        "presence_penalty": 0.0,
        "keep_alive": "5m",
        **WEBUI_OLLAMA_SETTINGS,
    }
    body.update(more)
    return body


@pytest.fixture(scope="module")
def webui_gateway(start_module_gateway, fake_ollama, fake_openai_chat, tmp_path_factory):
    config = tmp_path_factory.mktemp("webui") / "relay.toml"
    config.write_text(
        f"""
[backends.compat]
type = "openai"
url = "{fake_openai_chat.url}/v1"
models = ["gpt-*"]

[backends.ollama]
type = "ollama"
url = "{fake_ollama.url}"
models = ["*"]
"""
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    return start_module_gateway(env)


def post(gw, body: dict[str, Any], path: str = "/v1/chat/completions") -> requests.Response:
    return requests.post(
        gw.url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )


def sse_text(resp: requests.Response) -> str:
    """The answer text of a chat stream; fails on an in-band error frame."""
    text = ""
    for line in resp.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    assert resp.text.rstrip().endswith("data: [DONE]")
    return text


def chat_bodies(ollama: FakeOllama) -> list[dict[str, Any]]:
    return [r.body for r in ollama.requests if r.path == "/api/chat"]


# --- finding 9: a model without tool support answers a message carrying Open WebUI's tools ----


@pytest.mark.parametrize("stream", [True, False])
def test_model_without_tools_answers_open_webui_message(webui_gateway, ollama, stream):
    ollama.script("gemma3:1b", tools_capable=False, content=["I am ", "Gemma."])
    body = webui_body("gemma3:1b", stream=stream)
    del body["think"]
    resp = post(webui_gateway, body)
    assert resp.status_code == 200, resp.text
    answer = sse_text(resp) if stream else resp.json()["choices"][0]["message"]["content"]
    assert answer == "I am Gemma."
    first, retry = chat_bodies(ollama)
    assert len(first["tools"]) == 30
    assert "tools" not in retry
    assert {k: v for k, v in first.items() if k != "tools"} == retry  # nothing else changes
    logs = webui_gateway.logs()
    assert re.search(r"\[INFO\] .*gemma3:1b.* does not support tools.*retrying without", logs)


def test_model_without_tools_or_thinking_answers_with_think_on(webui_gateway, ollama):
    # gemma3 can neither call tools nor think: both are dropped, one retry each.
    ollama.script("gemma3:1b", tools_capable=False, thinking_capable=False, content=["ok"])
    resp = post(webui_gateway, webui_body("gemma3:1b"))
    assert resp.status_code == 200, resp.text
    assert sse_text(resp) == "ok"
    bodies = chat_bodies(ollama)
    assert len(bodies) == 3
    assert bodies[0]["think"] is True and len(bodies[0]["tools"]) == 30
    assert "think" not in bodies[-1] and "tools" not in bodies[-1]


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "search_web"}}],
    ids=["required", "named"],
)
@pytest.mark.parametrize("stream", [True, False])
def test_required_tools_on_a_model_without_them_is_a_400_naming_tools(
    webui_gateway, ollama, choice, stream
):
    ollama.script("gemma3:1b", tools_capable=False)
    resp = post(webui_gateway, webui_body("gemma3:1b", tool_choice=choice, stream=stream))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "tools" and error["type"] == "invalid_request_error"
    assert "does not support tools" in error["message"]
    assert len(chat_bodies(ollama)) == 1  # no retry: the caller needs a tool call


def test_model_with_tools_gets_them_once(webui_gateway, ollama):
    ollama.script("llama3.2", content=["fine"])
    assert sse_text(post(webui_gateway, webui_body("llama3.2"))) == "fine"
    [body] = chat_bodies(ollama)
    assert len(body["tools"]) == 30


# --- finding 10: Open WebUI's Ollama settings reach Ollama ---------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_open_webui_settings_reach_ollama_options_think_and_format(webui_gateway, ollama, stream):
    ollama.script("qwen3:8b", content=["{}"])
    resp = post(webui_gateway, webui_body("qwen3:8b", stream=stream, temperature=0.7))
    assert resp.status_code == 200, resp.text
    [body] = chat_bodies(ollama)
    expected = {n: WEBUI_OLLAMA_SETTINGS[n] for n in OPTION_NAMES}
    expected.update(temperature=0.7, presence_penalty=0.0)
    assert body["options"] == expected
    assert body["think"] is True and body["format"] == "json" and body["keep_alive"] == "5m"
    for name in OPTION_NAMES:  # in `options` only, as Ollama reads them
        assert name not in body


def test_think_levels_and_schema_format_reach_ollama(webui_gateway, ollama):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for think in ("low", "medium", "high", False):
        body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi"}]}
        assert post(webui_gateway, {**body, "think": think, "format": schema}).status_code == 200
        sent = ollama.last().body
        assert sent["think"] == think and sent["format"] == schema


def test_native_spellings_win_over_top_level_fields_and_openai_ones(webui_gateway, ollama):
    body = {
        "model": "qwen3:8b",
        "messages": [{"role": "user", "content": "Hi"}],
        "num_ctx": 4096,
        "top_k": 20,
        "options": {"num_ctx": 16384, "temperature": 0.1},
        "temperature": 0.9,
        "think": "low",
        "reasoning_effort": "high",
        "format": {"type": "object"},
        "response_format": {"type": "json_object"},
    }
    assert post(webui_gateway, body).status_code == 200
    sent = ollama.last().body
    assert sent["options"] == {"num_ctx": 16384, "top_k": 20, "temperature": 0.1}
    assert sent["think"] == "low" and sent["format"] == {"type": "object"}


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_ctx", "8192"),
        ("num_ctx", 8192.5),
        ("top_k", True),
        ("min_p", "0.05"),
        ("repeat_penalty", "1.1"),
        ("mirostat_tau", [5]),
        ("use_mmap", "true"),
        ("use_mlock", 1),
        ("num_gpu", 2**70),
        ("think", "maybe"),
        ("think", 1),
        ("format", "xml"),
        ("format", ["json"]),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_wrong_typed_ollama_setting_is_a_400_naming_it(webui_gateway, ollama, field, value, stream):
    body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi"}], field: value}
    resp = post(webui_gateway, {**body, "stream": stream})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == field
    assert not chat_bodies(ollama)


def test_open_webui_settings_reach_legacy_completions_options(webui_gateway, ollama):
    body = {"model": "llama3.2", "prompt": "Once", "num_ctx": 2048, "top_k": 5, "min_p": 0.1}
    assert post(webui_gateway, body, "/v1/completions").status_code == 200
    sent = ollama.last("/api/generate").body
    assert sent["options"] == {"num_ctx": 2048, "top_k": 5, "min_p": 0.1}


def test_open_webui_settings_pass_untouched_to_openai_compatible_upstreams(
    webui_gateway, fake_openai_chat
):
    fake_openai_chat.reset()
    body = webui_body("gpt-test", stream=False, options={"num_ctx": 1}, num_thread="eight")
    assert post(webui_gateway, body).status_code == 200
    sent = fake_openai_chat.last("/v1/chat/completions").body
    for name, value in {**WEBUI_OLLAMA_SETTINGS, "num_thread": "eight"}.items():
        assert sent[name] == value, name  # top-level, as sent, not checked against Ollama's types
    assert sent["options"] == {"num_ctx": 1} and sent["keep_alive"] == "5m"
    assert len(sent["tools"]) == 30


# --- finding 7: a failed embeddings request names its backend in the access log -------------


@pytest.mark.parametrize(
    "model, status", [("missing-embed", 404), ("broken-embed", 502)], ids=["404", "502"]
)
def test_failed_embeddings_log_the_backend(webui_gateway, ollama, model, status):
    if model == "broken-embed":
        ollama.script(model, status=500, error="llama runner process has terminated")
    resp = post(webui_gateway, {"model": model, "input": "x"}, "/v1/embeddings")
    assert resp.status_code == status, resp.text
    line = rf"POST /v1/embeddings model={model} backend=ollama status={status} "
    wait_until(lambda: re.search(line, webui_gateway.logs()))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "model, status", [("missing-text", 404), ("broken-text", 502)], ids=["404", "502"]
)
def test_failed_completions_log_the_backend(webui_gateway, ollama, model, status, stream):
    if model == "broken-text":
        ollama.script(model, status=500, error="llama runner process has terminated")
    resp = post(webui_gateway, {"model": model, "prompt": "x", "stream": stream}, "/v1/completions")
    assert resp.status_code == status, resp.text
    line = rf"POST /v1/completions model={model} backend=ollama status={status} "
    wait_until(lambda: re.search(line, webui_gateway.logs()))
