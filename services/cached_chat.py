"""Chat through the reply cache: whole replies stored and shared, cached replies replayed as
streams, finished live streams stored. Builds on services.chat; knows nothing of HTTP.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Generator
from typing import Any

from services import chat
from services.backends.base import Backend
from services.gateway import Gateway
from services.keys import ApiKey, require_model
from services.reply_cache import BYPASS, HIT, MISS, CachePolicy, Codec, cache_key
from services.types import (
    CallContext,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ToolCall,
    Usage,
    result_deltas,
)
from services.unicode_text import escape_surrogates

# Backends whose answer depends on the request alone. A Dify app keeps conversation state
# upstream, so a reply from the cache would skip a turn it must see; its replies are not cached.
STATELESS_BACKENDS = ("ollama", "openai")
# Request fields that cannot change the answer, left out of the cache key.
_INERT = {"stream", "include_usage", "user"}
_INERT_EXTRA = {"metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}


def chat_payload(req: ChatRequest) -> dict[str, Any]:
    """The part of a chat request that decides its answer."""
    payload = {k: v for k, v in dataclasses.asdict(req).items() if k not in _INERT}
    payload["extra"] = {k: v for k, v in req.extra.items() if k not in _INERT_EXTRA}
    return payload


def _encode(result: ChatResult) -> bytes:
    text = json.dumps(dataclasses.asdict(result), ensure_ascii=False)
    return escape_surrogates(text).encode()  # an upstream's lone surrogate, escaped


def _decode(raw: bytes) -> ChatResult:
    return result_from_dict(json.loads(raw))


def result_from_dict(data: dict[str, Any]) -> ChatResult:
    """Rebuild a ChatResult from its dataclasses.asdict() form."""
    data["tool_calls"] = tuple(ToolCall(**c) for c in data["tool_calls"])
    data["usage"] = Usage(**data["usage"])
    return ChatResult(**data)


# A reply cut off by the token limit is not stored: asking again with more room should work.
CHAT_CODEC = Codec(_encode, _decode, lambda r: r.finish_reason != "length")


def _key(backend: Backend, req: ChatRequest, policy: CachePolicy) -> str:
    return cache_key("chat.completions", policy.tenant, backend.name, chat_payload(req))


def cacheable(backend: Backend, ctx: CallContext, policy: CachePolicy) -> CachePolicy:
    # A caller's own upstream key or conversation makes the answer theirs alone: no caching.
    if backend.type in STATELESS_BACKENDS and not ctx.upstream_key and not ctx.conversation_id:
        return policy
    return dataclasses.replace(policy, read=False, store=False)


def complete(
    gw: Gateway, req: ChatRequest, ctx: CallContext, key: ApiKey, policy: CachePolicy
) -> tuple[Backend, ChatResult, str]:
    """Run a whole chat turn, or answer it from the cache; also says HIT, MISS or BYPASS."""
    require_model(key, req.model)
    backend = gw.router.resolve(req.model, ctx)
    result, status = gw.cache.run(
        lambda: _key(backend, req, policy),
        cacheable(backend, ctx, policy),
        lambda: chat.complete(gw, req, ctx)[1],
        CHAT_CODEC,
    )
    return backend, result, status


def stream(
    gw: Gateway, req: ChatRequest, ctx: CallContext, key: ApiKey, policy: CachePolicy
) -> tuple[Backend, Generator[ChatDelta, None, None], str]:
    """Start a streamed turn: a cached reply replayed, or a live one that fills the cache."""
    require_model(key, req.model)
    backend = gw.router.resolve(req.model, ctx)
    policy = cacheable(backend, ctx, policy)
    used = gw.cache.enabled and (policy.read or policy.store)
    cache_id = _key(backend, req, policy) if used else ""
    if gw.cache.enabled and policy.read:
        hit = gw.cache.get(cache_id)
        if hit is not None:
            return backend, replay(CHAT_CODEC.decode(hit)), HIT
    backend, deltas = chat.stream(gw, req, ctx)
    status = MISS if gw.cache.enabled and policy.read else BYPASS
    if gw.cache.enabled and policy.store:
        deltas = _recording(deltas, lambda r: gw.cache.put(cache_id, CHAT_CODEC.encode(r)))
    return backend, deltas, status


def replay(result: ChatResult) -> Generator[ChatDelta, None, None]:
    """Turn a stored reply back into deltas, so it streams with a live stream's framing."""
    yield from result_deltas(result)


def _recording(
    deltas: Generator[ChatDelta, None, None], store: Any
) -> Generator[ChatDelta, None, None]:
    # Collect the reply while it streams; store it only when the stream really finished.
    content: list[str] = []
    reasoning: list[str] = []
    refusal: list[str] = []
    calls: dict[int, ToolCall] = {}
    logprobs: dict[str, list[Any]] = {}
    try:
        for d in deltas:
            for name, items in (d.logprobs or {}).items():  # `content` and `refusal` lists
                if isinstance(items, list):
                    logprobs.setdefault(name, []).extend(items)
            if d.replace:  # the content replaces everything said so far
                content.clear()
            content.append(d.content)
            refusal.append(d.refusal)
            reasoning.append(d.reasoning)
            for c in d.tool_calls:
                old = calls.get(c.index)
                calls[c.index] = (
                    c
                    if old is None
                    else dataclasses.replace(old, arguments=old.arguments + c.arguments)
                )
            if d.finish_reason is not None:
                result = ChatResult(
                    content="".join(content),
                    reasoning="".join(reasoning),
                    tool_calls=tuple(calls[i] for i in sorted(calls)),
                    finish_reason=d.finish_reason,
                    usage=d.usage or Usage(),
                    refusal="".join(refusal),
                    logprobs=logprobs or None,
                )
                if CHAT_CODEC.storable(result):
                    store(result)
            yield d
    finally:
        deltas.close()
