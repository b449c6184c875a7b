"""The real Claude Code CLI through Relay's Anthropic face to the fake Ollama (issue 14).

A plain prompt, tool round trips with its Bash and Write tools, stream-json output and a wrong
key; what reached Ollama and the gateway's access log are checked too.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import requests

from tests.claude_code.conftest import (
    CLAUDE,
    FAST_MODEL,
    KEY_NAME,
    MAIN_MODEL,
    VERSION,
    access_records,
    wait_access,
)
from tests.fakes.ollama import FakeOllama, Script

pytestmark = pytest.mark.claude_code


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def chats(ollama: FakeOllama, model: str = MAIN_MODEL) -> list[dict[str, Any]]:
    return [r.body for r in ollama.requests if r.path == "/api/chat" and r.body["model"] == model]


def test_the_pinned_version_is_installed():
    out = subprocess.run([str(CLAUDE), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == VERSION


@pytest.mark.parametrize("bearer", [True, False], ids=["auth-token", "api-key"])
def test_plain_prompt_answered(claude, cc_gateway, ollama: FakeOllama, bearer):
    # A model that cannot think: Claude Code asks for adaptive thinking on every turn.
    ollama.script(MAIN_MODEL, content=["Relay", " says", " hello."], thinking_capable=False)
    ollama.script(FAST_MODEL, content=["Title"])
    before = len(access_records(cc_gateway))

    run = claude("Say hello", "--output-format", "json", bearer=bearer)

    assert run.returncode == 0, run.stdout + run.stderr
    result = run.result()
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Relay says hello."
    assert MAIN_MODEL in result["modelUsage"]

    sent = chats(ollama)[-1]
    assert "Say hello" in [text_of(m) for m in sent["messages"] if m["role"] == "user"][-1]
    # The per-request billing line never reaches the backend (it would defeat its prompt cache).
    assert all("x-anthropic-billing-header" not in text_of(m) for m in sent["messages"])
    names = {t["function"]["name"] for t in sent.get("tools") or []}
    assert {"Bash", "Write"} <= names
    assert "DeferredToolPlaceholder" not in names  # defer_loading: never callable

    records = wait_access(cc_gateway, before + 1)[before:]
    assert [r["status"] for r in records] == [200] * len(records)  # nothing refused, no re-sends
    assert {(r["key"], r["model"]) for r in records} == {(KEY_NAME, MAIN_MODEL)}


def test_bash_tool_round_trip(claude, ollama: FakeOllama):
    command = "echo made by bash > from-bash.txt"
    ollama.script(
        MAIN_MODEL,
        content=[],
        tool_calls=[{"name": "Bash", "arguments": {"command": command, "description": "Write"}}],
        after_tool=Script(content=["The", " file", " is", " there."]),
    )

    run = claude("Make from-bash.txt", "--output-format", "json", "--allowedTools", "Bash")

    assert run.returncode == 0, run.stdout + run.stderr
    assert (run.workdir / "from-bash.txt").read_text() == "made by bash\n"
    result = run.result()
    assert result["result"] == "The file is there." and result["num_turns"] == 2
    first, second = chats(ollama)[-2:]
    assert not any(m["role"] == "tool" for m in first["messages"])
    [call] = [m for m in second["messages"] if m.get("tool_calls")][-1]["tool_calls"]
    assert call["function"]["name"] == "Bash"
    assert call["function"]["arguments"]["command"] == command
    assert [m["role"] for m in second["messages"] if m["role"] != "system"][-1] == "tool"


def test_write_tool_round_trip(claude, ollama: FakeOllama, tmp_path):
    target = tmp_path / "work" / "notes.txt"
    ollama.script(
        MAIN_MODEL,
        content=["Writing it."],
        tool_calls=[
            {
                "name": "Write",
                "arguments": {"file_path": str(target), "content": "written by Claude Code\n"},
            }
        ],
        after_tool=Script(content=["Saved notes.txt."]),
    )

    run = claude("Save notes.txt", "--output-format", "json", "--allowedTools", "Write")

    assert run.returncode == 0, run.stdout + run.stderr
    assert target.read_text() == "written by Claude Code\n"
    assert run.result()["result"] == "Saved notes.txt."
    tool_turn = [m for m in chats(ollama)[-1]["messages"] if m["role"] == "tool"][-1]
    assert "File created successfully" in text_of(tool_turn)


def test_stream_json_output(claude, ollama: FakeOllama):
    ollama.script(
        MAIN_MODEL,
        content=[],
        tool_calls=[{"name": "Bash", "arguments": {"command": "printf streamed"}}],
        after_tool=Script(content=["It", " printed", " streamed."]),
    )

    run = claude(
        "Print something",
        "--output-format",
        "stream-json",
        "--verbose",  # stream-json with -p requires it
        "--allowedTools",
        "Bash",
    )

    assert run.returncode == 0, run.stdout + run.stderr
    events = run.events()
    assert (events[0]["type"], events[0]["subtype"]) == ("system", "init")
    assert events[0]["model"] == MAIN_MODEL
    blocks = [
        (event["type"], block)
        for event in events
        if event["type"] in ("assistant", "user")
        for block in event["message"]["content"]
        if isinstance(block, dict)
    ]
    kinds = [(who, block["type"]) for who, block in blocks]
    assert ("assistant", "tool_use") in kinds and ("user", "tool_result") in kinds
    use = next(b for who, b in blocks if b["type"] == "tool_use")
    assert use["name"] == "Bash" and use["input"]["command"] == "printf streamed"
    assert use["id"].startswith("toolu_")
    output = next(b for who, b in blocks if b["type"] == "tool_result")
    assert output["tool_use_id"] == use["id"] and "streamed" in json.dumps(output["content"])
    assert kinds.index(("assistant", "tool_use")) < kinds.index(("user", "tool_result"))
    assert blocks[-1] == ("assistant", {"type": "text", "text": "It printed streamed."})
    last = events[-1]
    assert (last["type"], last["subtype"], last["result"]) == (
        "result",
        "success",
        "It printed streamed.",
    )


@pytest.mark.parametrize("bearer", [True, False], ids=["auth-token", "api-key"])
def test_wrong_key_fails_fast(claude, cc_gateway, ollama: FakeOllama, bearer):
    ollama.script(MAIN_MODEL)
    before = len(access_records(cc_gateway))

    run = claude("Say hello", "--output-format", "json", key="sk-not-a-relay-key", bearer=bearer)

    # Without `x-should-retry: false` on the 401 it retries ten times over about three minutes.
    assert run.seconds < 5, f"took {run.seconds:.1f}s"
    assert run.returncode != 0
    result = run.result()
    assert result["is_error"] is True
    assert (result["api_error_status"], result["api_error_type"]) == (401, "authentication_error")
    assert chats(ollama) == []
    records = wait_access(cc_gateway, before + 1)[before:]
    assert [(r["status"], r["key"]) for r in records] == [(401, "-")]  # asked once
    assert "sk-not-a-relay-key" not in cc_gateway.logs()


def test_connectivity_probe_needs_no_key(cc_gateway):
    # Without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC it sends `HEAD /api/hello` with no key
    # before its first call; any answer but an authentication failure will do.
    probe = requests.head(cc_gateway.url + "/api/hello", timeout=5)
    assert probe.status_code in (200, 404)
