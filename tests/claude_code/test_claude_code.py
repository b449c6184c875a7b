"""The real Claude Code CLI through Relay's Anthropic face to the fake Ollama (issue 14).

A plain prompt, tool round trips with its Bash and Write tools, stream-json output and a wrong
key; what reached Ollama and the gateway's access log are checked too.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import requests

from tests.claude_code.conftest import (
    CLAUDE,
    FAST_MODEL,
    KEY_NAME,
    MAIN_MODEL,
    QUIET,
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


def test_the_pinned_version_is_installed(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **QUIET}
    out = subprocess.run(
        [str(CLAUDE), "--version"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
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


def test_thinking_and_two_tools_in_one_turn(claude, ollama: FakeOllama, tmp_path):
    target = tmp_path / "work" / "b.txt"
    ollama.script(
        MAIN_MODEL,
        thinking=["I should", " write two files."],
        content=["Doing both."],
        tool_calls=[
            {"name": "Bash", "arguments": {"command": "echo a > a.txt"}},
            {"name": "Write", "arguments": {"file_path": str(target), "content": "b\n"}},
        ],
        after_tool=Script(thinking=["Both done."], content=["Two files written."]),
    )

    run = claude(
        "Write a.txt and b.txt",
        "--output-format",
        "stream-json",
        "--verbose",
        "--allowedTools",
        "Bash",
        "Write",
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert (run.workdir / "a.txt").read_text() == "a\n" and target.read_text() == "b\n"
    blocks = [
        block
        for event in run.events()
        if event["type"] == "assistant"
        for block in event["message"]["content"]
    ]
    assert [b["type"] for b in blocks] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
        "thinking",
        "text",
    ]
    assert blocks[0]["thinking"] == "I should write two files."
    assert [b["name"] for b in blocks if b["type"] == "tool_use"] == ["Bash", "Write"]
    assert run.events()[-1]["result"] == "Two files written."
    # Both results went back, each tied to its call.
    second = chats(ollama)[-1]["messages"]
    calls = [m for m in second if m.get("tool_calls")][-1]["tool_calls"]
    results = [m for m in second if m["role"] == "tool"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]


def test_a_stream_broken_by_the_backend_falls_back_to_one_whole_reply(
    claude, cc_gateway, ollama: FakeOllama
):
    # The fake breaks only streams: Claude Code gets one `event: error`, asks again with
    # stream false, and the session still answers.
    ollama.script(MAIN_MODEL, content=["Recovered."], midstream_error="model runner crashed")
    before = len(access_records(cc_gateway))

    run = claude("Say hello", "--output-format", "json")

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result()["result"] == "Recovered."
    assert [c["stream"] for c in chats(ollama)] == [True, False]
    records = wait_access(cc_gateway, before + 2)[before:]
    assert "failed mid-reply: model runner crashed" in (records[0]["error"] or "")
    assert records[1]["status"] == 200 and records[1]["stream"] is False


@pytest.mark.parametrize(
    ("model", "status", "kind"),
    [("llama3.2", 403, "permission_error"), ("claude-missing", 404, "not_found_error")],
    ids=["not-allowed-for-the-key", "unknown-to-the-backend"],
)
def test_refused_model_fails_fast(claude, cc_gateway, ollama: FakeOllama, model, status, kind):
    before = len(access_records(cc_gateway))

    run = claude("Say hello", "--output-format", "json", "--model", model, timeout=20)

    assert run.seconds < 5, f"took {run.seconds:.1f}s"
    result = run.result()
    assert result["is_error"] is True and run.returncode != 0
    assert (result["api_error_status"], result["api_error_type"]) == (status, kind)
    records = wait_access(cc_gateway, before + 1)[before:]
    assert {r["status"] for r in records} == {status} and len(records) <= 2
    assert {r["key"] for r in records} == {KEY_NAME}


@pytest.mark.parametrize("bearer", [True, False], ids=["auth-token", "api-key"])
def test_wrong_key_fails_fast(claude, cc_gateway, ollama: FakeOllama, bearer):
    ollama.script(MAIN_MODEL)
    before = len(access_records(cc_gateway))

    run = claude(
        "Say hello", "--output-format", "json", key="sk-not-a-relay-key", bearer=bearer, timeout=20
    )

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
