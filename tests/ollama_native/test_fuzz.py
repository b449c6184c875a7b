"""Random bodies against the Ollama face over HTTP: whatever is sent, the answer is a 2xx, a 4xx
or a backend's 502/503/504 in Ollama's envelope, never a 500 or a traceback, and every stream is
whole NDJSON that ends in a `done` line or one error line."""

from __future__ import annotations

import json
import random

import requests

from tests.ollama_native.conftest import bearer

VALUES = [
    None, True, False, 0, -1, 7, 1.5, 2**70, -(2**64), "", "x", "json", "low", "max", "5m",
    "aGk=", "%%", [], [1], ["a"], [None], {}, {"a": 1}, {"type": "object"}, [{}],
]  # fmt: skip
TOP = [
    "model", "messages", "prompt", "suffix", "system", "template", "raw", "images", "stream",
    "options", "tools", "format", "think", "keep_alive", "truncate", "input", "dimensions",
]  # fmt: skip
MESSAGE = ["role", "content", "images", "tool_calls", "thinking", "tool_name", "tool_call_id"]
OPTIONS = ["temperature", "top_p", "num_predict", "stop", "seed", "top_k", "num_ctx", "mystery"]
PATHS = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]


def random_body(rng: random.Random, path: str) -> dict:
    """A valid body for the path, then up to four fields set to anything."""
    body: dict = {"model": rng.choice(["llama3.2", "qwen3:8b", "nope", "gpt-test", "chatbot"])}
    body.update(
        {
            "/api/chat": {"messages": [{"role": "user", "content": "Hi"}]},
            "/api/generate": {"prompt": "Hi"},
            "/api/embed": {"input": ["Hi"]},
            "/api/embeddings": {"prompt": "Hi"},
        }.get(path, {})
    )
    for _ in range(rng.randint(0, 4)):
        value = rng.choice(VALUES)
        where = rng.random()
        if where < 0.5:
            body[rng.choice(TOP)] = value
        elif where < 0.75 and isinstance(body.get("messages"), list) and body["messages"]:
            message = body["messages"][0]
            if isinstance(message, dict):
                message[rng.choice(MESSAGE)] = value
        else:
            options = body.setdefault("options", {})
            if isinstance(options, dict):
                options[rng.choice(OPTIONS)] = value
    return body


def test_random_bodies_never_break_the_face(native_gateway, ollama, fake_openai_chat):
    ollama.script("nomic-embed-text")
    rng = random.Random(14)
    seen: set[int] = set()
    streams = 0
    for _ in range(300):
        path = rng.choice(PATHS)
        body = random_body(rng, path)
        resp = requests.post(
            native_gateway.url + path, json=body, headers=bearer("main"), timeout=15
        )
        seen.add(resp.status_code)
        text = resp.text
        assert resp.status_code < 500 or resp.status_code in (502, 503, 504), (path, body, text)
        assert "Traceback" not in text and 'File "/' not in text
        if resp.status_code >= 400:
            assert resp.headers["Content-Type"].startswith("application/json"), (path, body)
            error = resp.json()
            assert list(error) == ["error"] and isinstance(error["error"], str), error
        elif resp.headers["Content-Type"] == "application/x-ndjson":
            streams += 1
            assert text.endswith("\n"), (path, body, text)
            last = json.loads(text.splitlines()[-1])
            assert last.get("done") is True or list(last) == ["error"], (path, body, last)
        else:
            assert isinstance(resp.json(), dict)
    assert {200, 400, 404} <= seen and streams >= 10
