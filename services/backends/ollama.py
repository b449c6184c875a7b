"""Ollama backend: /api/chat (NDJSON stream or one JSON object) and /api/tags.

Translation follows docs/design.md §7; the §7.5 table lists the faults of Ollama's own OpenAI
layer that this adapter avoids (max_completion_tokens, tool_choice, call indexes,
finish_reason after tool calls, mid-stream errors, streams that end without done).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping
from datetime import datetime
from typing import Any

import requests
from loguru import logger

from services.backends.base import Backend, new_tool_call
from services.backends.ollama_text import (
    embed_payload,
    embedding_result,
    generate_delta,
    generate_payload,
    merge_native,
    sampling_options,
    usage_of,
)
from services.common.ndjson import iter_ndjson, loads
from services.core.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
    UpstreamUnavailableError,
)
from services.core.types import (
    CallContext,
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    Message,
    ModelInfo,
    TextRequest,
    ToolCall,
    Usage,
)
from services.faces.extension_fields import OLLAMA_CHAT_FIELDS, check_extension_fields

# OpenAI reasoning_effort -> Ollama think (as Ollama's own layer maps it, reference §5.1).
THINK = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}


class OllamaBackend(Backend):
    type = "ollama"
    label = "Ollama"

    def list_models(self) -> list[ModelInfo]:
        with self._send("GET", "/api/tags") as resp:
            body = self._json(resp)
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise UpstreamError(f"{self.title} sent a model list without 'models'.")
        return [
            ModelInfo(id=m["name"], created=_unix(m.get("modified_at")), owned_by=self.name)
            for m in models
            if isinstance(m, dict) and isinstance(m.get("name"), str)
        ]

    def check(self) -> None:
        with self._send("GET", "/api/version", timeout=(self.timeout[0], 5.0)):
            pass

    def chat(self, req: ChatRequest, ctx: CallContext) -> ChatResult:
        with self._post_chat(req, stream=False) as resp:
            body = self._json(resp)
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise UpstreamError(f"{self.title} sent a reply without 'message'.")
        message = body["message"]
        calls = _tool_calls(message.get("tool_calls"), 0)
        logger.debug(
            "{} -> done_reason={} tokens={}+{} tool_calls={}",
            self.title,
            body.get("done_reason"),
            body.get("prompt_eval_count", 0),
            body.get("eval_count", 0),
            len(calls),
        )
        return ChatResult(
            content=message.get("content") or "",
            reasoning=message.get("thinking") or "",
            tool_calls=calls,
            finish_reason=_finish_reason(body.get("done_reason"), bool(calls)),
            usage=usage_of(body),
        )

    def stream_chat(self, req: ChatRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        resp = self._post_chat(req, stream=True)
        del req  # sent: not kept for the stream's life (docs/design.md §4.6)
        body = self._iter_body(resp)
        try:
            calls_seen = 0
            for chunk in iter_ndjson(body):
                if not isinstance(chunk, dict):
                    raise ValueError("not an object")
                if "error" in chunk:  # mid-stream failure, reference §3.2
                    raise UpstreamError(f"{self.title} failed mid-reply: {chunk['error']}")
                message = chunk.get("message") or {}
                calls = _tool_calls(message.get("tool_calls"), calls_seen)
                calls_seen += len(calls)
                if message.get("content") or message.get("thinking") or calls:
                    yield ChatDelta(
                        content=message.get("content") or "",
                        reasoning=message.get("thinking") or "",
                        tool_calls=calls,
                    )
                if chunk.get("done"):
                    logger.debug(
                        "{} -> stream done done_reason={} tokens={}+{} tool_calls={}",
                        self.title,
                        chunk.get("done_reason"),
                        chunk.get("prompt_eval_count", 0),
                        chunk.get("eval_count", 0),
                        calls_seen,
                    )
                    # Before the last delta: its reader may stop without asking for more.
                    self._release(resp, body)
                    yield ChatDelta(
                        finish_reason=_finish_reason(chunk.get("done_reason"), calls_seen > 0),
                        usage=usage_of(chunk),
                    )
                    return
            # A stream that closes without done:true was cut (crash, OOM, unload), §6 #21.
            raise UpstreamError(f"{self.title} ended the stream before it was complete.")
        except ValueError:
            raise UpstreamError(f"{self.title} sent a malformed stream line.") from None
        finally:
            resp.close()  # on client disconnect too: Ollama stops generating

    # --- legacy completions and embeddings (translation in ollama_text) ----------------------

    def stream_text(self, req: TextRequest, ctx: CallContext) -> Generator[ChatDelta, None, None]:
        payload = generate_payload(req, stream=True)
        logger.debug(
            "{} <- POST /api/generate model={} raw={}", self.title, req.model, payload.get("raw")
        )
        resp = self._send("POST", "/api/generate", json=payload, stream=True)
        try:
            for chunk in iter_ndjson(self._iter_body(resp)):
                delta = generate_delta(chunk, self.title)
                if delta is not None:
                    yield delta
                    if delta.finish_reason is not None:
                        return
            raise UpstreamError(f"{self.title} ended the stream before it was complete.")
        except ValueError:
            raise UpstreamError(f"{self.title} sent a malformed stream line.") from None
        finally:
            resp.close()  # on client disconnect too: Ollama stops generating

    def complete_text(self, req: TextRequest, ctx: CallContext) -> ChatResult:
        with self._send("POST", "/api/generate", json=generate_payload(req, stream=False)) as r:
            body = self._json(r)
        try:
            delta = generate_delta(body, self.title)
        except ValueError:
            delta = None
        if delta is None or delta.finish_reason is None:
            raise UpstreamError(f"{self.title} sent a reply without 'done'.")
        return ChatResult(
            delta.content, delta.reasoning, (), delta.finish_reason, delta.usage or Usage()
        )

    def embed(self, req: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        with self._send("POST", "/api/embed", json=embed_payload(req)) as resp:
            body = self._json(resp)
        return embedding_result(body, len(req.inputs), self.title)

    # --- Ollama's own endpoints, for Relay's Ollama face (docs/ollama.md) ---------------------

    def native(self, method: str, path: str, body: Any = None) -> Any:
        """Call one of Ollama's informational endpoints (tags, ps, show, version); its JSON."""
        with self._send(method, path, json=body) as resp:
            return self._json(resp)

    def forward(
        self, method: str, path: str, body: bytes | Iterator[bytes] | None, content_type: str | None
    ) -> tuple[int, str, Iterator[bytes]]:
        """Send a model-management request on (pull, push, create, copy, delete, blobs); its
        status, media type and body are streamed back as Ollama sent them (pull progress)."""
        headers = {"Content-Type": content_type} if content_type else {}
        resp = self._send(
            method,
            path,
            data=body,
            headers=headers,
            stream=True,
            keep_errors=True,
            timeout=(self.timeout[0], max(self.timeout[1], 600.0)),
            allow_redirects=False,
        )
        media = resp.headers.get("Content-Type", "application/json; charset=utf-8")
        return resp.status_code, media, self._forwarded(resp)

    def _forwarded(self, resp: requests.Response) -> Iterator[bytes]:
        try:
            yield from self._iter_body(resp)
        except GatewayError as e:
            logger.warning("{}: management reply cut off: {}", self.title, e.message)
        finally:
            resp.close()

    # --- translation ----------------------------------------------------------------------

    def _post_chat(self, req: ChatRequest, *, stream: bool) -> requests.Response:
        payload = self._to_ollama(req, stream)
        logger.debug(
            "{} <- POST /api/chat model={} messages={} images={} tools={} options={} format={} "
            "think={} stream={}",
            self.title,
            payload["model"],
            len(payload["messages"]),
            sum(len(m.get("images", ())) for m in payload["messages"]),
            len(payload.get("tools", ())),
            sorted(payload.get("options", {})),
            "format" in payload,
            payload.get("think"),
            stream,
        )
        # A model that cannot think or call tools rejects `think` or `tools` (one at a time); each
        # is dropped and the request sent again, at most once per field.
        while True:
            try:
                return self._send("POST", "/api/chat", json=payload, stream=stream)
            except InvalidRequestError as e:
                dropped = self._drop_unsupported(payload, req, e)
                if dropped is None:
                    raise
                logger.info(
                    "{}: model {} does not support {}; retrying without {}",
                    self.title,
                    req.model,
                    "thinking" if dropped == "think" else "tools",
                    dropped if dropped == "think" else f"its {len(payload['tools'])} tools",
                )
                del payload[dropped]

    @staticmethod
    def _drop_unsupported(payload: dict[str, Any], req: ChatRequest, e: GatewayError) -> str | None:
        """Name the field to leave out after Ollama refused it, or None to let the error stand.

        `think` on a model that cannot think: answering without reasoning is what an OpenAI
        client expects from a model that has none (reference §6 #11). `tools` on a model that
        cannot call them (Open WebUI sends its built-in tools with every message): answering
        in text is what `tool_choice` "auto" allows, but not "required" or a named function.
        """
        # A caller of Ollama's own API gets Ollama's answer to its `think` or `tools`, as from
        # Ollama itself.
        native = req.ollama if req.ollama is not None else {}
        if (
            "think" in payload
            and "think" not in native
            and "does not support thinking" in e.message
        ):
            return "think"
        if (
            payload.get("tools")
            and req.ollama is None
            and "does not support tools" in e.message
            and req.tool_choice != "required"
            and not isinstance(req.tool_choice, Mapping)
        ):
            return "tools"
        return None

    def _to_ollama(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        check_extension_fields(req.extra, OLLAMA_CHAT_FIELDS)
        options = sampling_options(req)
        payload: dict[str, Any] = {
            "model": req.model,
            "messages": self._messages(req.messages),
            "stream": stream,
        }
        if options:
            payload["options"] = options
        tools = _select_tools(req.tools, req.tool_choice)
        if tools:
            payload["tools"] = tools
        if req.response_format is not None:
            if req.response_format["type"] == "json_object":
                payload["format"] = "json"
            else:
                payload["format"] = req.response_format["json_schema"].get("schema") or "json"
        if req.reasoning_effort is not None:
            payload["think"] = THINK[req.reasoning_effort]
        # Ollama's own `think` and `format` as top-level fields (Open WebUI sends them) win over
        # reasoning_effort and response_format.
        for name in ("think", "format"):
            if req.extra.get(name) is not None:
                payload[name] = req.extra[name]
        if req.extra.get("keep_alive") is not None:
            payload["keep_alive"] = req.extra["keep_alive"]
        if req.ollama is not None:
            merge_native(payload, req.ollama)
        return payload

    def _messages(self, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
        names_by_call_id: dict[str, str] = {}
        out = []
        for i, m in enumerate(messages):
            role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
            msg: dict[str, Any] = {"role": role, "content": m.text()}
            images = [
                self.images.load_base64(url, f"messages[{i}].content") for url in m.image_urls()
            ]
            if images:
                msg["images"] = images
            if m.tool_calls:
                msg["tool_calls"] = [_call_to_ollama(c, i) for c in m.tool_calls]
                names_by_call_id.update({c.id: c.name for c in m.tool_calls})
            if m.reasoning:
                msg["thinking"] = m.reasoning
            if role == "tool":
                name = m.name or names_by_call_id.get(m.tool_call_id or "")
                if name:
                    msg["tool_name"] = name
                if m.tool_call_id:
                    msg["tool_call_id"] = m.tool_call_id
            out.append(msg)
        return out

    def _error_from_response(self, resp: requests.Response) -> GatewayError:
        try:
            message = str(resp.json().get("error", ""))
        except (ValueError, AttributeError):
            message = ""
        status = resp.status_code
        if not message:
            return UpstreamError(f"{self.title} failed with HTTP {status} and no error message.")
        if status == 404:
            return ModelNotFoundError(f"{self.title}: {message}", param="model")
        if status == 400:
            if "context length" in message:
                return InvalidRequestError(
                    f"{self.title}: {message}", param="messages", code="context_length_exceeded"
                )
            if "does not support tools" in message:
                return InvalidRequestError(
                    f"{self.title} rejected the request: {message}", param="tools"
                )
            return InvalidRequestError(f"{self.title} rejected the request: {message}")
        if status == 429:
            return RateLimitError(f"{self.title} is rate limited: {message}", retry_after=1)
        if status == 503:
            return UpstreamUnavailableError(f"{self.title} is busy: {message}", retry_after=1)
        return UpstreamError(f"{self.title} failed (HTTP {status}): {message}")


def _select_tools(
    tools: tuple[Mapping[str, Any], ...], choice: str | Mapping[str, Any] | None
) -> list[Mapping[str, Any]]:
    """Apply tool_choice (Ollama ignores it): 'none' sends no tools, a name only that one."""
    if choice == "none":
        return []
    if isinstance(choice, Mapping):
        wanted = choice["function"]["name"]
        return [t for t in tools if t["function"]["name"] == wanted]
    return list(tools)


def _call_to_ollama(call: ToolCall, message_index: int) -> dict[str, Any]:
    try:
        arguments = loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise InvalidRequestError(
            "Tool call arguments must be JSON text.",
            param=f"messages[{message_index}].tool_calls[{call.index}].function.arguments",
        ) from None
    out: dict[str, Any] = {
        "function": {"index": call.index, "name": call.name, "arguments": arguments}
    }
    if call.id:
        out["id"] = call.id
    return out


def _tool_calls(raw: Any, first_index: int) -> tuple[ToolCall, ...]:
    # Ollama sends arguments as an object and may omit ids (before v0.12.10) or repeat index 0;
    # we number calls ourselves across the whole turn (reference §2.3, §6 #4 and #7).
    if not isinstance(raw, list):
        return ()
    calls: list[ToolCall] = []
    for call in raw:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        arguments = fn.get("arguments", {})
        text = (
            arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        )
        calls.append(new_tool_call(first_index + len(calls), call.get("id"), fn["name"], text))
    return tuple(calls)


def _finish_reason(done_reason: Any, saw_tool_calls: bool) -> str:
    # Ollama has no tool_calls done_reason; a turn that called tools ends with "stop" (§2.1).
    if done_reason == "length":
        return "length"
    return "tool_calls" if saw_tool_calls else "stop"


def _unix(stamp: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
