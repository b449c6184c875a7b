"""A fake OpenAI-compatible server: chat-only (vLLM-like) or Responses-only, on real loopback HTTP.

`FakeOpenAI(api="chat")` answers /v1/chat/completions (streamed and not), /v1/models and
/v1/images/generations; `FakeOpenAI(api="responses")` answers /v1/responses with the event
sequence of docs/design.md §5.6 and 404s /v1/chat/completions. The next reply is
scripted with `fake.reply = Reply(...)`; every request is recorded with its body and headers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.server import ServerThread

PNG = b"\x89PNG\r\n\x1a\nfake-image"


@dataclass
class Reply:
    content: list[str] = field(default_factory=lambda: ["Hello", " from", " upstream", "."])
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments": [..]}
    incomplete: bool = False  # cut off: finish_reason "length" / status "incomplete"
    prompt_tokens: int = 9
    completion_tokens: int = 4
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    status: int | None = None  # answer at once with this status and `error`
    error: dict[str, Any] = field(default_factory=dict)  # the OpenAI envelope's inner object
    midstream_error: str | None = None  # an error frame / response.failed after the start
    delay: float = 0.0  # seconds before answering (for timeouts)


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    raw_uri: str = ""  # the request target exactly as it came on the request line


class FakeOpenAI:
    def __init__(self, api: str = "chat") -> None:
        self.api = api
        self.models = ["gpt-test", "gpt-test-mini"]
        self.reply = Reply()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ServerThread(self.wsgi)
        self.url = self._server.url

    def reset(self) -> None:
        with self._lock:
            self.reply = Reply()
            self.requests.clear()

    def last(self, path: str) -> Recorded:
        return [r for r in self.requests if r.path == path][-1]

    def close(self) -> None:
        self._server.close()

    # --- the server -----------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:  # uploads and other non-JSON bodies are recorded as bytes
            body = raw
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    body,
                    dict(request.headers),
                    str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""),
                )
            )
        return self.route(request, body)(environ, start_response)

    def route(self, request: Request, body: Any) -> Response:
        path, reply = request.path, self.reply
        time.sleep(reply.delay)
        if path.startswith("/files/"):
            return Response(PNG, content_type="image/png")
        if path == "/v1/models":
            model = {"object": "model", "created": 1700000000, "owned_by": "fake"}
            return self.json({"object": "list", "data": [{"id": m, **model} for m in self.models]})
        if reply.status is not None:
            error = {"message": "failed", "type": "server_error", "param": None, "code": None}
            return self.json({"error": {**error, **reply.error}}, reply.status)
        if path == "/v1/images/generations":
            return self.images(body)
        if path == "/v1/embeddings":
            return self.embeddings(body)
        if path == "/v1/moderations":
            text = body.get("input") if isinstance(body, dict) else None
            return self.json(
                {
                    "id": "modr-1",
                    "model": "omni-moderation-latest",
                    "results": [{"flagged": text == "bad", "categories": {}}],
                }
            )
        if path == "/v1/audio/speech":  # a binary body, sent in pieces
            return Response(
                (b"ID3" + bytes([i]) * 4096 for i in range(8)), content_type="audio/mpeg"
            )
        if path == "/v1/hop-headers":  # a reply naming one of its headers in Connection
            return Response(
                b"{}",
                content_type="application/json",
                headers={
                    "Connection": "X-Upstream-Hop",
                    "X-Upstream-Hop": "hop",
                    "X-Kept": "1",
                    "OpenAI-Organization": "org-operator",
                },
            )
        if path == "/v1/files" and request.method == "POST":
            return self.json(
                {
                    "id": "file-1",
                    "object": "file",
                    "bytes": len(request.get_data()),
                    "purpose": "batch",
                }
            )
        if path == "/v1/chat/completions" and self.api == "chat":
            if body.get("stream"):
                return self.sse(self.chat_stream(body))
            return self.json(self.chat_whole(body))
        if path == "/v1/responses" and self.api == "responses":
            if body.get("stream"):
                return self.sse(self.responses_stream(body))
            return self.json(self.response_object(body, "final"))
        error = {"message": f"Unknown path {path}", "type": "invalid_request_error"}
        return self.json({"error": {**error, "param": None, "code": "unknown_url"}}, 404)

    @staticmethod
    def json(obj: Any, status: int = 200) -> Response:
        return Response(json.dumps(obj), status=status, content_type="application/json")

    @staticmethod
    def sse(frames: Iterator[bytes]) -> Response:
        return Response(frames, content_type="text/event-stream")

    def embeddings(self, body: dict[str, Any]) -> Response:
        # Floats as OpenAI sends them when asked for encoding_format "float".
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [len(text) / 10, 0.5, -0.25]}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        return self.json({"object": "list", "data": data, "model": body["model"], "usage": usage})

    def images(self, body: dict[str, Any]) -> Response:
        data = []
        for i in range(body.get("n") or 1):
            if body.get("response_format") == "b64_json":
                item = {"b64_json": base64.b64encode(PNG).decode()}
            else:
                item = {"url": f"{self.url}/files/image-{i}.png"}
            data.append({**item, "revised_prompt": "A revised " + body["prompt"]})
        return self.json({"created": int(time.time()), "data": data})

    # --- chat completions -----------------------------------------------------------------

    def chat_usage(self) -> dict[str, Any]:
        r = self.reply
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
        }

    def finish_reason(self) -> str:
        if self.reply.incomplete:
            return "length"
        return "tool_calls" if self.reply.tool_calls else "stop"

    def chat_whole(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.reply
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(r.content) or None,
            "refusal": "".join(r.refusal) or None,
        }
        if r.reasoning:
            message["reasoning_content"] = "".join(r.reasoning)
        if r.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
                }
                for i, c in enumerate(r.tool_calls)
            ]
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason()}],
            "usage": self.chat_usage(),
        }

    def chat_stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        r = self.reply
        head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": ""}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for piece in r.reasoning:
            yield chunk({"reasoning_content": piece})
        for piece in r.refusal:
            yield chunk({"refusal": piece})
        for piece in r.content:
            yield chunk({"content": piece})
        for i, call in enumerate(r.tool_calls):
            first = {"name": call["name"], "arguments": ""}
            yield chunk(
                {
                    "tool_calls": [
                        {"index": i, "id": f"call_{i}", "type": "function", "function": first}
                    ]
                }
            )
            for piece in call["arguments"]:
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        if r.midstream_error is not None:
            error = {
                "message": r.midstream_error,
                "type": "server_error",
                "param": None,
                "code": None,
            }
            yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
            return
        yield chunk({}, self.finish_reason())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**head, "choices": [], "usage": self.chat_usage()}
            yield b"data: " + json.dumps(usage).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    # --- responses ------------------------------------------------------------------------

    def output_items(self) -> list[dict[str, Any]]:
        """The final output items, in order: reasoning, message, function calls."""
        r, items = self.reply, []
        if r.reasoning:
            summary = [{"type": "summary_text", "text": "".join(r.reasoning)}]
            items.append({"type": "reasoning", "id": "rs_1", "summary": summary})
        if r.content or r.refusal:
            part = (
                {"type": "refusal", "refusal": "".join(r.refusal)}
                if r.refusal
                else {"type": "output_text", "text": "".join(r.content), "annotations": []}
            )
            items.append(
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        for i, call in enumerate(r.tool_calls):
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{i}",
                    "call_id": f"call_{i}",
                    "name": call["name"],
                    "arguments": "".join(call["arguments"]),
                    "status": "completed",
                }
            )
        return items

    def response_object(self, body: dict[str, Any], stage: str) -> dict[str, Any]:
        r = self.reply
        final = stage == "final"
        status = "in_progress" if not final else "incomplete" if r.incomplete else "completed"
        return {
            "id": "resp_1",
            "object": "response",
            "created_at": 1700000000,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if final and r.incomplete
            else None,
            "model": body["model"],
            "output": self.output_items() if final else [],
            "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "usage": {
                "input_tokens": r.prompt_tokens,
                "input_tokens_details": {"cached_tokens": r.cached_tokens},
                "output_tokens": r.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
                "total_tokens": r.prompt_tokens + r.completion_tokens,
            }
            if final
            else None,
        }

    def responses_stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        r, seq = self.reply, iter(range(10_000))

        def event(kind: str, **fields: Any) -> bytes:
            data = {"type": kind, "sequence_number": next(seq), **fields}
            return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        yield event("response.created", response=self.response_object(body, "created"))
        yield event("response.in_progress", response=self.response_object(body, "created"))
        if r.midstream_error is not None:
            failed = {**self.response_object(body, "created"), "status": "failed"}
            failed["error"] = {"code": "server_error", "message": r.midstream_error}
            yield event("response.failed", response=failed)
            return
        final = self.output_items()
        for index, item in enumerate(final):
            at = {"output_index": index, "item_id": item["id"]}
            if item["type"] == "reasoning":
                yield event(
                    "response.output_item.added", output_index=index, item={**item, "summary": []}
                )
                part = {"type": "summary_text", "text": ""}
                yield event(
                    "response.reasoning_summary_part.added", **at, summary_index=0, part=part
                )
                for piece in r.reasoning:
                    yield event(
                        "response.reasoning_summary_text.delta", **at, summary_index=0, delta=piece
                    )
                text = "".join(r.reasoning)
                yield event(
                    "response.reasoning_summary_text.done", **at, summary_index=0, text=text
                )
                yield event(
                    "response.reasoning_summary_part.done",
                    **at,
                    summary_index=0,
                    part={**part, "text": text},
                )
            elif item["type"] == "message":
                start = {**item, "status": "in_progress", "content": []}
                yield event("response.output_item.added", output_index=index, item=start)
                part = item["content"][0]
                empty = {"type": part["type"], part["type"].replace("output_", ""): ""}
                yield event("response.content_part.added", **at, content_index=0, part=empty)
                kind = "refusal" if part["type"] == "refusal" else "output_text"
                for piece in r.refusal if kind == "refusal" else r.content:
                    extra = {} if kind == "refusal" else {"logprobs": []}
                    yield event(
                        f"response.{kind}.delta", **at, content_index=0, delta=piece, **extra
                    )
                done = (
                    {"refusal": part["refusal"]}
                    if kind == "refusal"
                    else {"text": part["text"], "logprobs": []}
                )
                yield event(f"response.{kind}.done", **at, content_index=0, **done)
                yield event("response.content_part.done", **at, content_index=0, part=part)
            else:
                start = {**item, "arguments": "", "status": "in_progress"}
                yield event("response.output_item.added", output_index=index, item=start)
                call = r.tool_calls[int(item["call_id"].split("_")[1])]
                for piece in call["arguments"]:
                    yield event("response.function_call_arguments.delta", **at, delta=piece)
                yield event(
                    "response.function_call_arguments.done",
                    **at,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            yield event("response.output_item.done", output_index=index, item=item)
        response = self.response_object(body, "final")
        kind = "response.incomplete" if r.incomplete else "response.completed"
        yield event(kind, response=response)
