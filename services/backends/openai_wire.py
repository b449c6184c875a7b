"""Pure translation between core types and an OpenAI-compatible upstream's Chat Completions JSON.

Used by the openai_compat backend; no I/O. Fields Relay does not model (`ChatRequest.extra`)
are sent on untouched, so the upstream sees what the caller asked for (docs/design.md §5.7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.backends.responses_upstream import as_dict, as_int, as_str, read_usage
from services.core.errors import UpstreamError
from services.core.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    TextRequest,
    ToolCall,
    Usage,
)
from services.faces.chat_reply import render_message


def to_chat_body(req: ChatRequest, stream: bool) -> dict[str, Any]:
    """Rebuild the OpenAI request body from a ChatRequest, with its extra fields kept intact."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [render_message(m) for m in req.messages],
        "stream": stream,
    }
    optional = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": list(req.stop) or None,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "tools": [dict(t) for t in req.tools] or None,
        "tool_choice": req.tool_choice,
        "response_format": req.response_format,
        "reasoning_effort": req.reasoning_effort,
        "user": req.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.max_tokens is not None:
        body.update(dict.fromkeys(req.max_tokens_names, req.max_tokens))
    if stream:
        # Always ask for usage: the access log wants it even when the caller does not.
        body["stream_options"] = {"include_usage": True}
    body.update(req.extra)
    return body


def to_text_body(req: TextRequest, stream: bool) -> dict[str, Any]:
    """Rebuild a legacy completions body (one prompt) with its extra fields kept intact."""
    body: dict[str, Any] = {"model": req.model, "prompt": req.prompt, "stream": stream}
    optional = {
        "suffix": req.suffix,
        "max_tokens": req.max_tokens,
        "stop": list(req.stop) or None,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "user": req.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(req.extra)
    return body


def result_from_text(body: Any, title: str) -> ChatResult:
    """Turn an upstream text_completion object into a ChatResult."""
    choice = _first_choice(body, title)
    return ChatResult(
        content=as_str(choice.get("text")),
        finish_reason=as_str(choice.get("finish_reason")) or "stop",
        usage=usage_from_chat(body.get("usage")),
    )


def usage_from_chat(raw: Any) -> Usage:
    """Read an OpenAI chat `usage` object, details included when present."""
    return read_usage(raw, given="prompt", made="completion")


def result_from_chat(body: Any, title: str) -> ChatResult:
    """Turn an upstream chat.completion object into a ChatResult."""
    choice = _first_choice(body, title)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamError(f"{title} sent a choice without a message.")
    calls = tuple(
        ToolCall(
            id=str(c.get("id") or ""),
            name=str(fn.get("name") or ""),
            arguments=str(fn.get("arguments") or ""),
            index=i,
        )
        for i, c in enumerate(message.get("tool_calls") or [])
        if isinstance(c, dict) and isinstance(fn := c.get("function"), dict)
    )
    return ChatResult(
        content=as_str(message.get("content")),
        reasoning=as_str(message.get("reasoning_content") or message.get("reasoning")),
        tool_calls=calls,
        finish_reason=as_str(choice.get("finish_reason")) or ("tool_calls" if calls else "stop"),
        usage=usage_from_chat(body.get("usage")),
        refusal=as_str(message.get("refusal")),
        logprobs=_logprobs(choice),
    )


class _ChunkReader:
    """What every chunk of an OpenAI-style stream carries, whatever its choices hold: an error
    in band, the usage (with include_usage, in a late chunk), the finish reason. The finish is
    held back until the stream ends, so the last ChatDelta carries both (docs/design.md §5.1)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def _choice(self, chunk: Any) -> Mapping[str, Any] | None:
        """The chunk's first choice (None when it has none), after its error and usage."""
        if not isinstance(chunk, dict):
            raise UpstreamError(f"{self.title} sent a malformed chunk.")
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamError(f"{self.title} failed mid-reply: {message}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_chat(chunk["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        choice: Mapping[str, Any] = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        return choice

    def finish(self) -> list[ChatDelta]:
        """Return the final delta once the upstream stream has ended."""
        if self.finish_reason is None:
            raise UpstreamError(f"{self.title} ended the stream before the reply was complete.")
        return [ChatDelta(finish_reason=self.finish_reason, usage=self.usage)]


class ChatChunkReader(_ChunkReader):
    """Turn upstream chat.completion.chunk objects into ChatDeltas, one chunk at a time."""

    def feed(self, chunk: Any) -> list[ChatDelta]:
        choice = self._choice(chunk)
        if choice is None:
            return []
        delta = as_dict(choice.get("delta"))
        out = ChatDelta(
            content=as_str(delta.get("content")),
            reasoning=as_str(delta.get("reasoning_content") or delta.get("reasoning")),
            refusal=as_str(delta.get("refusal")),
            tool_calls=tuple(self._tool_call(c) for c in delta.get("tool_calls") or []),
            logprobs=_logprobs(choice),
        )
        empty = not (out.content or out.reasoning or out.refusal or out.tool_calls or out.logprobs)
        return [] if empty else [out]

    def _tool_call(self, raw: Any) -> ToolCall:
        if not isinstance(raw, dict) or as_int(raw.get("index")) is None:
            raise UpstreamError(f"{self.title} sent a tool call delta without an index.")
        fn = as_dict(raw.get("function"))
        return ToolCall(
            id=as_str(raw.get("id")),
            name=as_str(fn.get("name")),
            arguments=as_str(fn.get("arguments")),
            index=int(raw["index"]),
        )


class TextChunkReader(_ChunkReader):
    """Turn upstream text_completion chunks into ChatDeltas (the text in `content`)."""

    def feed(self, chunk: Any) -> list[ChatDelta]:
        choice = self._choice(chunk)
        text = as_str(choice.get("text")) if choice is not None else ""
        return [ChatDelta(content=text)] if text else []


def _logprobs(choice: Mapping[str, Any]) -> dict[str, Any] | None:
    found = choice.get("logprobs")
    return found if isinstance(found, dict) and found else None


def _first_choice(body: Any, title: str) -> Mapping[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError(f"{title} sent a reply without choices.")
    return choices[0]
