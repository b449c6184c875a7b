"""Backend-neutral core types. Backends translate to and from these, never to another's JSON."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ContentPart:
    """A piece of message content: text, or an image given as a data: or http(s) URL."""

    type: Literal["text", "image"]
    text: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call: `arguments` is JSON text as OpenAI sends it; `index` is its place."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str | tuple[ContentPart, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None

    def text(self) -> str:
        """Return the text of the message, parts joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text")

    def image_urls(self) -> tuple[str, ...]:
        """Return the URLs of the image parts, in order."""
        if isinstance(self.content, tuple):
            return tuple(p.url for p in self.content if p.type == "image")
        return ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    # The field(s) the caller gave the limit in, sent on under the same name(s): many
    # OpenAI-compatible servers ignore `max_completion_tokens`, OpenAI's reasoning models
    # refuse `max_tokens`.
    max_tokens_names: tuple[str, ...] = ("max_tokens",)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    include_usage: bool = False
    # Fields Relay does not model, kept so pass-through backends lose nothing.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A request of Ollama's native API: its fields the core does not model (`options`,
    # `keep_alive`, `think`, `format`, ...), which an Ollama backend sends on as they came and
    # other backends ignore; None when the request came through another face (docs/ollama.md).
    ollama: Mapping[str, Any] | None = None


@dataclass(slots=True)
class CallContext:
    """What the HTTP layer knows beyond the OpenAI body."""

    key_name: str = "anonymous"
    upstream_key: str | None = field(default=None, repr=False)  # a caller's own backend key
    conversation_id: str | None = None  # an explicit Dify conversation to continue
    public_url: str = ""  # the URL the caller reached Relay at, for links to kept files
    request_id: str = ""  # the request's X-Request-ID (a budget's hold is released by it)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Details some upstreams report; None when unknown (rendered only when known).
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    # Relay counted or estimated the tokens: the upstream did not say (usage_estimate.py).
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole assistant turn."""

    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = Usage()
    refusal: str = ""
    # The choice's `logprobs` object as an OpenAI-compatible upstream sent it, when asked for.
    logprobs: Mapping[str, Any] | None = None
    # Response headers the backend gave for this turn (Dify's X-Dify-Conversation-Id); not cached.
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One step of a streamed turn; the last one carries finish_reason and usage."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    # The content replaces everything said so far (Dify's output moderation). A stream cannot
    # take back what it sent, so it shows the replacement after REPLACE_SEPARATOR.
    replace: bool = False
    refusal: str = ""
    logprobs: Mapping[str, Any] | None = None  # this chunk's, as the upstream sent them
    # Response headers the backend learned (Dify's conversation id), on the first delta after
    # it learned them; the core hands them up in its outcome, before the reply's first byte.
    headers: Mapping[str, str] | None = None


REPLACE_SEPARATOR = "\n\n"


@dataclass(slots=True)
class StreamStats:
    """What a stream did, filled in while it runs and read by the access log when it closes."""

    usage: Usage | None = None
    finish_reason: str | None = None
    error: str | None = None
    chunks: int = 0
    first_token: float | None = None  # perf_counter() when the first token went out


def result_deltas(result: ChatResult) -> Iterator[ChatDelta]:
    """A whole reply as the deltas of a stream that says it at once."""
    if result.reasoning:
        yield ChatDelta(reasoning=result.reasoning)
    if result.content or result.logprobs:
        yield ChatDelta(content=result.content, logprobs=result.logprobs)
    if result.refusal:
        yield ChatDelta(refusal=result.refusal)
    if result.tool_calls:
        yield ChatDelta(tool_calls=result.tool_calls)
    yield ChatDelta(finish_reason=result.finish_reason, usage=result.usage)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    created: int
    owned_by: str
    alias_of: tuple[str, ...] = ()  # an alias: the targets (`backend/model`) it routes to


def new_id(prefix: str) -> str:
    """Make a unique, unguessable id such as chatcmpl-3f1c…"""
    return prefix + secrets.token_hex(14)


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    ollama: Mapping[str, Any] | None = None  # as on ChatRequest


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TextRequest:
    """One prompt to continue (legacy completions); backends stream ChatDelta back for it.

    The streamed unit is ChatDelta: the continuation in `content`, any thinking in `reasoning`.
    """

    model: str
    prompt: str
    suffix: str | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    ollama: Mapping[str, Any] | None = None  # as on ChatRequest (`system`, `raw`, `images`, ...)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """An image generation request; `options` holds validated generation settings by name."""

    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    response_format: str = "url"  # or "b64_json"
    user: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
