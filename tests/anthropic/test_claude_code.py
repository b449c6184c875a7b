"""A Claude-Code-shaped session over raw HTTP, as the CLI sends it, against each backend type:
the fake Ollama, a Dify app and an OpenAI-compatible upstream, one Claude tier on each.

What the CLI sends (docs/anthropic.md "Claude Code"): /v1/messages?beta=true with beta flags,
three system blocks (the per-request billing line first) with cache_control, tools including a
deferred one and a server tool, a system message after the user turn, adaptive thinking with an
effort, a JSON-string metadata.user_id, context_management, and always streaming.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from tests.anthropic.conftest import names, sse_events
from tests.conftest import API_KEY
from tests.fakes.dify import FakeDify
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI, Reply

BILLING = "x-anthropic-billing-header: cc_version=2.1.37.0d9; cc_entrypoint=cli; cch={};"
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
        "additionalProperties": False,
    },
}
CC_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "fine-grained-tool-streaming-2025-05-14,context-management-2025-06-27,effort-2099-01-01",
    "x-app": "cli",
    "user-agent": "claude-cli/2.1.37 (external, cli)",
    "x-stainless-retry-count": "0",
    "X-Claude-Code-Session-Id": str(uuid.uuid4()),
}
OLLAMA_MODEL = "claude-sonnet-4-5-20250929"
DIFY_MODEL = "claude-haiku-4-5-20251001"
OPENAI_MODEL = "claude-opus-4-1-20250805"


def request_body(model: str, messages: list[dict[str, Any]], stream: bool = True) -> dict:
    return {
        "model": model,
        "max_tokens": 32000,
        "stream": stream,
        "temperature": 1,
        "metadata": {
            "user_id": json.dumps({"device_id": "d1", "account_uuid": "", "session_id": "s1"})
        },
        "system": [
            {"type": "text", "text": BILLING.format(uuid.uuid4().hex[:5])},
            {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
            {
                "type": "text",
                "text": "Follow the instructions. " * 50,
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "tools": [
            {**BASH, "cache_control": {"type": "ephemeral"}},
            {
                "name": "Placeholder",
                "description": "never callable",
                "input_schema": {"type": "object"},
                "defer_loading": True,
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        ],
        "messages": messages,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }


FIRST_TURN = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "<system-reminder>Today is Monday.</system-reminder>"},
            {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}},
        ],
    },
    {"role": "system", "content": "MCP server instructions: none."},
]


def turn(url: str, body: dict, key_header: dict[str, str]) -> list[tuple[str, dict]]:
    r = requests.post(
        url + "/v1/messages?beta=true",
        json=body,
        headers={**CC_HEADERS, **key_header},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    events = sse_events(r.content)
    assert names(events)[0] == "message_start" and names(events)[-1] == "message_stop"
    return events


def final_blocks(events: list[tuple[str, dict]]) -> list[dict]:
    """Rebuild the content array the way the SDKs accumulate it (by index)."""
    blocks: list[dict] = []
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return blocks


def session(
    url: str, model: str, key_header: dict[str, str], earlier_call: dict | None = None
) -> dict[str, Any]:
    """count_tokens, a streamed turn, a tool_result turn (answering this turn's tool call, or
    `earlier_call`), and a whole (non-streamed) turn."""
    count = requests.post(
        url + "/v1/messages/count_tokens?beta=true",
        json={k: v for k, v in request_body(model, FIRST_TURN).items() if k != "max_tokens"},
        headers={**CC_HEADERS, **key_header},
        timeout=10,
    )
    assert count.status_code == 200, count.text
    assert count.json()["input_tokens"] > len("Follow the instructions. " * 50) // 4
    first = turn(url, request_body(model, FIRST_TURN), key_header)
    start = first[0][1]["message"]
    assert start["model"] == model  # the Claude name the CLI asked for, echoed
    blocks = final_blocks(first)
    calls = [b for b in blocks if b["type"] == "tool_use"]
    tool_use = calls[0] if calls else earlier_call or {"id": "toolu_1", "name": "Bash", "input": {}}
    history = [
        *FIRST_TURN,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should list.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Listing."},
                {k: tool_use[k] for k in ("id", "name", "input")} | {"type": "tool_use"},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use["id"],
                    "content": [{"type": "text", "text": "README.md\nsetup.py"}],
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
    ]
    second = turn(url, request_body(model, history), key_header)
    answer = final_blocks(second)
    whole = requests.post(
        url + "/v1/messages?beta=true",
        json=request_body(model, history, stream=False),
        headers={**CC_HEADERS, **key_header},
        timeout=30,
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["model"] == model and whole.json()["id"].startswith("msg_")
    return {"first": blocks, "calls": calls, "answer": answer, "whole": whole.json()}


def assert_clean(bodies: list[Any], keep_billing: bool = False) -> None:
    """What reached the upstream: no billing line (unless kept), no deferred or server tool."""
    text = json.dumps(bodies)
    assert ("x-anthropic-billing-header" in text) is keep_billing
    assert IDENTITY in text or "list the files" in text
    assert "Placeholder" not in text and "web_search" not in text
    assert "opaque" not in text  # redacted thinking never reaches a model
    assert "context_management" not in text and "clear_thinking" not in text
    assert "cache_control" not in text


@pytest.fixture(scope="module")
def tiers(start_module_gateway, fake_ollama, fake_dify, fake_openai_chat, tmp_path_factory):
    """One gateway, Claude Code's three tiers on three backend types by a `models` glob."""
    config = tmp_path_factory.mktemp("claude-code") / "relay.toml"
    config.write_text(
        f"""
[backends.local]
type = "ollama"
url = "{fake_ollama.url}"
models = ["claude-sonnet-*", "llama*"]

[backends.dify]
type = "dify"
url = "{fake_dify.url}/v1"
models = ["claude-haiku-*"]
[backends.dify.apps."helper"]
key_env = "DIFY_KEY_HELPER"

[backends.vllm]
type = "openai"
url = "{fake_openai_chat.url}/v1"
models = ["claude-opus-*"]
"""
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "DIFY_KEY_HELPER": "app-helper-key",
        "RELAY_CACHE_TTL": "0",
    }
    return start_module_gateway(env)


def test_session_on_ollama(tiers, ollama: FakeOllama):
    ollama.script(
        OLLAMA_MODEL, content=[], tool_calls=[{"name": "Bash", "arguments": {"command": "ls"}}]
    )
    first = turn(tiers.url, request_body(OLLAMA_MODEL, FIRST_TURN), {"x-api-key": API_KEY})
    (call,) = final_blocks(first)
    assert call["type"] == "tool_use" and call["input"] == {"command": "ls"}
    ollama.script(OLLAMA_MODEL, thinking=["Two files."], content=["There are ", "two files."])
    # The same session again, now answering in text: the tool round trip reaches Ollama.
    out = session(tiers.url, OLLAMA_MODEL, {"Authorization": f"Bearer {API_KEY}"}, call)
    assert [b["type"] for b in out["answer"]] == ["thinking", "text"]
    assert out["answer"][1]["text"] == "There are two files."
    chats = [r.body for r in ollama.requests if r.path == "/api/chat"]
    assert_clean(chats)
    sent = chats[-1]
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "user",
        "system",
        "assistant",
        "tool",
    ]
    assert sent["messages"][0]["content"].startswith(IDENTITY)
    assert sent["messages"][2]["content"] == "MCP server instructions: none."
    assert sent["messages"][3]["thinking"] == "I should list."
    assert sent["messages"][3]["tool_calls"][0]["function"]["arguments"] == {"command": "ls"}
    assert sent["messages"][4]["tool_name"] == "Bash"
    assert sent["messages"][4]["tool_call_id"] == call["id"]
    assert sent["messages"][4]["content"] == "README.md\nsetup.py"
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash"]
    assert sent["think"] == "high" and sent["options"]["num_predict"] == 32000
    # The first-turn prefix is byte-identical from one request to the next: the backend's
    # prompt cache can reuse it although the billing line changed.
    firsts = [c for c in chats if len(c["messages"]) == 3]
    assert len(firsts) >= 2 and firsts[0]["messages"] == firsts[1]["messages"]


def test_session_on_a_dify_app(tiers, fake_dify: FakeDify):
    fake_dify.reset()
    fake_dify.add_app("app-helper-key", "chat", name="helper")
    out = session(tiers.url, DIFY_MODEL, {"x-api-key": API_KEY})
    assert [b["type"] for b in out["first"]] == ["text"] and out["first"][0]["text"]
    assert out["whole"]["content"][0]["type"] == "text"
    assert out["whole"]["stop_reason"] == "end_turn"
    bodies = [r.body for r in fake_dify.requests if r.path == "/v1/chat-messages"]
    assert bodies and "list the files" in json.dumps(bodies)
    assert "x-anthropic-billing-header" not in json.dumps(bodies)


def test_session_on_an_openai_compatible_upstream(tiers, fake_openai_chat: FakeOpenAI):
    fake_openai_chat.reset()
    fake_openai_chat.reply = Reply(
        content=[], tool_calls=[{"name": "Bash", "arguments": ['{"comm', 'and": "ls"}']}]
    )
    first = turn(tiers.url, request_body(OPENAI_MODEL, FIRST_TURN), {"x-api-key": API_KEY})
    (call,) = final_blocks(first)
    assert call["type"] == "tool_use" and call["input"] == {"command": "ls"}
    assert call["id"].startswith("toolu_")
    fake_openai_chat.reply = Reply(content=["Two ", "files."])
    out = session(tiers.url, OPENAI_MODEL, {"Authorization": f"Bearer {API_KEY}"}, call)
    assert out["answer"] == [{"type": "text", "text": "Two files."}]
    bodies = [r.body for r in fake_openai_chat.requests if r.path == "/v1/chat/completions"]
    assert_clean(bodies)
    sent = bodies[-1]
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "user",
        "system",
        "assistant",
        "tool",
    ]
    assert sent["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{"command": "ls"}'
    assert sent["messages"][4]["tool_call_id"] == sent["messages"][3]["tool_calls"][0]["id"]
    assert sent["reasoning_effort"] == "high" and sent["max_tokens"] == 32000
    assert sent["tools"][0]["function"]["parameters"] == BASH["input_schema"]


def test_billing_block_kept_with_the_setting(start_gateway, fake_ollama, ollama: FakeOllama):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_ANTHROPIC_KEEP_BILLING_BLOCK": "true",
        }
    )
    turn(gw.url, request_body("llama3.2", FIRST_TURN), {"x-api-key": API_KEY})
    sent = ollama.last().body
    assert_clean([sent], keep_billing=True)
    assert sent["messages"][0]["content"].startswith("x-anthropic-billing-header: cc_version=")


def test_sampling_and_tool_choice_reach_an_openai_upstream(tiers, fake_openai_chat: FakeOpenAI):
    fake_openai_chat.reset()
    body = {
        "model": OPENAI_MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [BASH],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "top_k": 5,
        "stop_sequences": ["###"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    r = requests.post(tiers.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})
    assert r.status_code == 200, r.text
    sent = fake_openai_chat.last("/v1/chat/completions").body
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["top_k"] == 5 and sent["stop"] == ["###"] and sent["reasoning_effort"] == "low"
    body["tool_choice"] = {"type": "tool", "name": "Bash"}
    requests.post(tiers.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})
    sent = fake_openai_chat.last("/v1/chat/completions").body
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "Bash"}}


def test_tool_choice_on_ollama(tiers, ollama: FakeOllama):
    body = {
        "model": "llama3.2",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [BASH, {**BASH, "name": "Read"}],
        "tool_choice": {"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
    }
    r = requests.post(tiers.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})
    assert r.status_code == 200, r.text
    assert [t["function"]["name"] for t in ollama.last().body["tools"]] == ["Read"]
    body["tool_choice"] = {"type": "none"}
    requests.post(tiers.url + "/v1/messages", json=body, headers={"x-api-key": API_KEY})
    assert "tools" not in ollama.last().body
