"""The official openai Node SDK as a second client: chat streaming and the Responses API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import API_KEY, ROOT
from tests.fakes.ollama import FakeOllama

NODE_DIR = ROOT / "tests" / "node"


@pytest.mark.node
def test_node_sdk_chat_stream_and_responses(gateway, ollama: FakeOllama):
    assert shutil.which("node"), "node is installed by scripts/test.sh"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "npm ci runs in scripts/test.sh"
    ollama.script(
        "llama3.2", content=["Hello", " from", " Node"], prompt_eval_count=3, eval_count=3
    )
    env = {
        **os.environ,
        "RELAY_URL": gateway.url + "/v1",
        "RELAY_KEY": API_KEY,
        "MODEL": "llama3.2",
    }
    run = subprocess.run(
        ["node", "e2e.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["chatStream"]["text"] == "Hello from Node"
    assert out["chatStream"]["usage"]["total_tokens"] == 6
    assert out["chatHelper"] == {"text": "Hello from Node", "finish": "stop"}
    assert out["response"] == {"text": "Hello from Node", "status": "completed"}
    events = out["responseEvents"]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events
    assert out["responseHelper"]["text"] == "Hello from Node"
    assert out["responseHelper"]["previous"].startswith("resp_")
    assert out["error"] == {"name": "NotFoundError", "status": 404, "code": "model_not_found"}
