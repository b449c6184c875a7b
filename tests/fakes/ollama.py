"""A fake Ollama server that speaks the native API byte for byte (docs/design.md §7).

Each model's behaviour is scripted with `FakeOllama.script(model, ...)`; every request body is
recorded, and so is every stream whose client went away before it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.server import ServerThread


def go_json(obj: Any) -> bytes:
    """Encode as Go's encoding/json does: compact, UTF-8, with <, > and & escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def created_at() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def answers_tool(messages: Any) -> bool:
    """Whether the last message other than a system message is a tool result."""
    turns = [m for m in messages or [] if isinstance(m, dict) and m.get("role") != "system"]
    return bool(turns) and turns[-1].get("role") == "tool"


def call_id() -> str:
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


@dataclass
class Script:
    content: list[str] = field(default_factory=lambda: ["Hello", " from", " fake", " Ollama", "."])
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments": {...}}
    send_ids: bool = True  # Ollama before v0.12.10 sent no tool call ids
    done_reason: str = "stop"
    prompt_eval_count: int = 12
    eval_count: int = 5
    status: int | None = None  # answer at once with this status and {"error": error}
    error: str = ""
    raw_body: bytes | None = None  # with status: a body that is not Ollama's JSON error
    raw_content_type: str = "text/html"
    midstream_error: str | None = None  # an {"error": ...} line after the content, no done
    truncate: bool = False  # end the stream without a done:true line
    garbage_line: bool = False  # send a truncated JSON line, then close
    pace: float = 0.0  # seconds between stream chunks
    headers_delay: float = 0.0  # seconds before answering at all
    thinking_capable: bool = True  # False: `think` gets Ollama's 400
    tools_capable: bool = True  # False: any `tools` get Ollama's 400 (checked after `think`)
    gate: threading.Event | None = None  # hold every answer until the test sets it
    # How the model answers once the conversation's last turn is a tool result: an agent's round
    # trip (ask for a tool, then answer from its result) with one script per step, whatever other
    # calls the client makes in between.
    after_tool: Script | None = None


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    at: float


class FakeOllama:
    def __init__(self, port: int = 0, record: bool = True, serve: bool = True) -> None:
        """Start serving on 127.0.0.1:port; serve=False builds only the WSGI app (benchmarks)."""
        self.record = record
        self.models = ["llama3.2:latest", "qwen3:8b"]
        self.scripts: dict[str, Script] = {}
        self.requests: list[Recorded] = []
        self.disconnects: list[tuple[str, float]] = []
        self.completed: list[str] = []
        self.blobs: dict[str, bytes] = {}
        self.pull_pace = 0.0  # seconds between pull progress lines
        self._lock = threading.Lock()
        self._server = ServerThread(self.wsgi, port=port) if serve else None
        self.url = self._server.url if self._server else ""

    # --- test controls --------------------------------------------------------------------

    def script(self, model: str, **kw: Any) -> Script:
        """Set how `model` answers (installing it if needed) and return the script."""
        self.scripts[model] = script = Script(**kw)
        full = model if ":" in model else model + ":latest"
        if full not in self.models:
            self.models.append(full)
        return script

    def reset(self) -> None:
        with self._lock:
            self.models = ["llama3.2:latest", "qwen3:8b"]
            self.scripts.clear()
            self.requests.clear()
            self.disconnects.clear()
            self.completed.clear()
            self.blobs.clear()
            self.pull_pace = 0.0

    def last(self, path: str = "/api/chat") -> Recorded:
        return [r for r in self.requests if r.path == path][-1]

    def close(self) -> None:
        if self._server:
            self._server.close()

    # --- the server -----------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body: Any = None
        if request.method in ("POST", "DELETE") and not request.path.startswith("/api/blobs/"):
            raw = request.get_data()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        if self.record:
            with self._lock:
                self.requests.append(
                    Recorded(
                        request.method, request.path, body, dict(request.headers), time.monotonic()
                    )
                )
        response = self.route(request, body)
        return response(environ, start_response)

    def route(self, request: Request, body: Any) -> Response:
        path = request.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return Response("Ollama is running", content_type="text/plain; charset=utf-8")
        if path == "/api/version":
            return self.json({"version": "0.33.0"})
        if path == "/api/tags":
            return self.json({"models": [self.tag(name) for name in self.models]})
        if path == "/api/chat" and request.method == "POST":
            return self.chat(body)
        if path == "/api/generate" and request.method == "POST":
            return self.generate(body)
        if path == "/api/embed" and request.method == "POST":
            return self.embed(body)
        if path == "/api/embeddings" and request.method == "POST":
            return self.embeddings(body)
        if path == "/api/show" and request.method == "POST":
            return self.show(body)
        if path == "/api/ps" and request.method == "GET":
            return self.json({"models": [self.loaded(name) for name in self.models]})
        if path == "/api/pull" and request.method == "POST":
            return self.pull(body)
        if path in ("/api/push", "/api/create") and request.method == "POST":
            return self.json({"status": "success"})
        if path == "/api/copy" and request.method == "POST":
            return self.copy(body)
        if path == "/api/delete" and request.method == "DELETE":
            return self.delete(body)
        if path.startswith("/api/blobs/") and request.method in ("HEAD", "POST"):
            digest = path.removeprefix("/api/blobs/")
            if request.method == "HEAD":
                status = 200 if digest in self.blobs else 404
                return Response(b"", status=status)
            self.blobs[digest] = request.get_data()
            return Response(b"", status=201)
        return Response("404 page not found", status=404, content_type="text/plain")

    # --- model information and management (reference §4.3-§4.6) --------------------------

    def show(self, body: Any) -> Response:
        model = (body or {}).get("model") or (body or {}).get("name") or ""
        script = self.lookup(model)
        if script is None:
            return self.json({"error": f"model '{model}' not found"}, 404)
        capabilities = ["completion", "tools"]
        if script.thinking_capable:
            capabilities.append("thinking")
        return self.json(
            {
                "modelfile": f"FROM {model}\n",
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": self.tag(model)["details"],
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                "capabilities": capabilities,
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            }
        )

    def loaded(self, name: str) -> dict[str, Any]:
        tag = self.tag(name)
        return {
            "name": name,
            "model": name,
            "size": tag["size"],
            "digest": tag["digest"],
            "details": tag["details"],
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "size_vram": tag["size"],
            "context_length": 4096,
        }

    def pull(self, body: Any) -> Response:
        model = (body or {}).get("model") or (body or {}).get("name") or ""
        full = model if ":" in model else model + ":latest"
        steps = [
            {"status": "pulling manifest"},
            {"status": "pulling a80c4f17acd5", "digest": "sha256:a80c4f17acd5", "total": 100},
            {
                "status": "pulling a80c4f17acd5",
                "digest": "sha256:a80c4f17acd5",
                "total": 100,
                "completed": 100,
            },
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        if full not in self.models:
            self.models.append(full)
        if (body or {}).get("stream", True) is False:
            return self.json(steps[-1])

        def lines() -> Any:
            sent = 0
            try:
                for step in steps:
                    yield go_json(step) + b"\n"
                    sent += 1
                    time.sleep(self.pull_pace)
            finally:
                if sent < len(steps) and self.record:
                    with self._lock:
                        self.disconnects.append((f"pull {model}", time.monotonic()))

        return Response(lines(), content_type="application/x-ndjson")

    def copy(self, body: Any) -> Response:
        source, destination = (body or {}).get("source", ""), (body or {}).get("destination", "")
        if self.lookup(source) is None:
            return self.json({"error": f"model '{source}' not found"}, 404)
        full = destination if ":" in destination else destination + ":latest"
        self.models.append(full)
        return Response(b"", status=200)

    def delete(self, body: Any) -> Response:
        model = (body or {}).get("model") or (body or {}).get("name") or ""
        full = model if ":" in model else model + ":latest"
        if full not in self.models:
            return self.json({"error": f"model '{model}' not found"}, 404)
        self.models.remove(full)
        return Response(b"", status=200)

    @staticmethod
    def json(obj: Any, status: int = 200) -> Response:
        return Response(go_json(obj), status=status, content_type="application/json; charset=utf-8")

    @staticmethod
    def tag(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab2",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }

    def lookup(self, model: str) -> Script | None:
        full = model if ":" in model else model + ":latest"
        if full not in self.models:
            return None
        return self.scripts.get(model) or self.scripts.get(full) or Script()

    def chat(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return self.json({"error": "missing request body"}, 400)
        model = body.get("model") or ""
        if not model:
            return self.json({"error": "model is required"}, 400)
        script = self.lookup(model)
        if script is None:
            return self.json({"error": f"model '{model}' not found"}, 404)
        if script.after_tool is not None and answers_tool(body.get("messages")):
            script = script.after_tool
        if script.gate is not None:
            script.gate.wait(30)
        if script.headers_delay:
            time.sleep(script.headers_delay)
        if script.status is not None:
            if script.raw_body is not None:
                return Response(
                    script.raw_body, status=script.status, content_type=script.raw_content_type
                )
            return self.json({"error": script.error}, script.status)
        if "think" in body and body["think"] is not False and not script.thinking_capable:
            return self.json({"error": f'"{model}" does not support thinking'}, 400)
        if body.get("tools") and not script.tools_capable:
            # CheckCapabilities names the model by its full registry name (reference §3).
            full = model if ":" in model else model + ":latest"
            return self.json(
                {"error": f"registry.ollama.ai/library/{full} does not support tools"}, 400
            )
        if body.get("stream", True):
            return Response(self.stream(model, script), content_type="application/x-ndjson")
        return self.json(self.whole(model, script))

    def tool_calls(self, script: Script) -> list[dict[str, Any]]:
        calls = []
        for i, call in enumerate(script.tool_calls):
            item: dict[str, Any] = {
                "function": {"index": i, "name": call["name"], "arguments": call["arguments"]}
            }
            if script.send_ids:
                item = {"id": call_id(), **item}
            calls.append(item)
        return calls

    def final(self, model: str, script: Script, message: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": model,
            "created_at": created_at(),
            "message": message,
            "done": True,
            "done_reason": script.done_reason,
            "total_duration": 4883583458,
            "load_duration": 1334875,
        }
        # Go omits zero counts (omitempty), reference §2.1.
        if script.prompt_eval_count:
            out["prompt_eval_count"] = script.prompt_eval_count
            out["prompt_eval_duration"] = 342546000
        if script.eval_count:
            out["eval_count"] = script.eval_count
            out["eval_duration"] = 4535599000
        return out

    def whole(self, model: str, script: Script) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(script.content)}
        if script.thinking:
            message["thinking"] = "".join(script.thinking)
        if script.tool_calls:
            message["tool_calls"] = self.tool_calls(script)
        return self.final(model, script, message)

    def stream(self, model: str, script: Script) -> Any:
        def line(message: dict[str, Any]) -> bytes:
            chunk = {"model": model, "created_at": created_at(), "message": message, "done": False}
            return go_json(chunk) + b"\n"

        finished = False
        try:
            for token in script.thinking:
                yield line({"role": "assistant", "content": "", "thinking": token})
                time.sleep(script.pace)
            for token in script.content:
                yield line({"role": "assistant", "content": token})
                time.sleep(script.pace)
            if script.tool_calls:
                yield line(
                    {"role": "assistant", "content": "", "tool_calls": self.tool_calls(script)}
                )
            if script.garbage_line:
                finished = True
                yield b'{"model":"' + model.encode() + b'","created_at":"2026'
                return
            if script.midstream_error is not None:
                finished = True
                yield go_json({"error": script.midstream_error}) + b"\n"
                return
            if script.truncate:
                finished = True
                return
            finished = True
            yield go_json(self.final(model, script, {"role": "assistant", "content": ""})) + b"\n"
            if self.record:
                self.completed.append(model)
        finally:
            if not finished and self.record:
                with self._lock:
                    self.disconnects.append((model, time.monotonic()))

    # --- /api/generate and /api/embed (reference §1.2, §2.1, §4.1) ----------------------

    def generate(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return self.json({"error": "missing request body"}, 400)
        model = body.get("model") or ""
        script = self.lookup(model)
        if script is None:
            return self.json({"error": f"model '{model}' not found"}, 404)
        if body.get("raw") and any(body.get(k) for k in ("template", "system", "context")):
            return self.json(
                {"error": "raw mode does not support template, system, or context"}, 400
            )
        if script.status is not None:
            return self.json({"error": script.error}, script.status)
        if not body.get("prompt") and not body.get("suffix"):  # loads the model only
            return self.json(
                {
                    "model": model,
                    "created_at": created_at(),
                    "response": "",
                    "done": True,
                    "done_reason": "load",
                }
            )
        # Field order of Go's GenerateResponse; `context` only outside raw mode (§2.1).
        final: dict[str, Any] = {"model": model, "created_at": "", "response": ""}
        final.update(done=True, done_reason=script.done_reason)
        if not body.get("raw"):
            final["context"] = [128006, 882, 128007, 271, 13347]
        metrics = self.final(model, script, {})
        final.update({k: v for k, v in metrics.items() if k.endswith(("_count", "_duration"))})
        if not body.get("stream", True):
            head = {"model": model, "created_at": created_at(), "response": "".join(script.content)}
            if script.thinking:
                head["thinking"] = "".join(script.thinking)
            return self.json({**head, **{k: v for k, v in final.items() if k not in head}})
        return Response(
            self.generate_stream(model, script, final), content_type="application/x-ndjson"
        )

    def generate_stream(self, model: str, script: Script, final: dict[str, Any]) -> Any:
        def line(**fields: Any) -> bytes:
            chunk = {"model": model, "created_at": created_at(), **fields, "done": False}
            return go_json(chunk) + b"\n"

        finished = False
        try:
            for token in script.thinking:
                yield line(response="", thinking=token)
                time.sleep(script.pace)
            for token in script.content:
                yield line(response=token)
                time.sleep(script.pace)
            finished = True
            if script.midstream_error is not None:
                yield go_json({"error": script.midstream_error}) + b"\n"
                return
            if script.truncate:
                return
            yield go_json({**final, "created_at": created_at()}) + b"\n"
            self.completed.append(model)
        finally:
            if not finished:
                with self._lock:
                    self.disconnects.append((model, time.monotonic()))

    def embeddings(self, body: Any) -> Response:
        """The legacy endpoint: one prompt, float64 numbers, no counts (reference §4.2)."""
        if not isinstance(body, dict):
            return self.json({"error": "missing request body"}, 400)
        model = body.get("model") or ""
        if self.lookup(model) is None:
            return self.json({"error": f'model "{model}" not found, try pulling it first'}, 404)
        prompt = body.get("prompt") or ""
        return self.json({"embedding": fake_embedding(prompt) if prompt else []})

    def embed(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return self.json({"error": "missing request body"}, 400)
        model = body.get("model") or ""
        script = self.lookup(model)
        if script is None:
            return self.json({"error": f'model "{model}" not found, try pulling it first'}, 404)
        if script.status is not None:
            return self.json({"error": script.error}, script.status)
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        if not all(isinstance(t, str) for t in texts):
            return self.json({"error": "invalid input type"}, 400)
        if not any(texts):  # loads the model only
            return self.json({"model": model, "embeddings": []})
        dims = body.get("dimensions") or EMBED_DIMENSIONS
        out: dict[str, Any] = {
            "model": model,
            "embeddings": [fake_embedding(t, dims) for t in texts],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": sum(len(t.split()) for t in texts),
        }
        return self.json(out)


EMBED_DIMENSIONS = 16


def fake_embedding(text: str, dimensions: int = EMBED_DIMENSIONS) -> list[float]:
    """A deterministic unit vector derived from the text's hash, rounded to float32 as Ollama's."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [seed[i % len(seed)] - 127.5 for i in range(max(dimensions, 1))][:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]
