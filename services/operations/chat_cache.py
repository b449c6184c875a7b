"""Chat replies in the reply cache: the key of a request, the stored form of a reply, and
whether a request's sampling lets its reply be cached at all.

services/operations/chat.py runs chat through the core pipeline (services/core/pipeline.py)
with these.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from services.backends.base import Backend
from services.common.unicode_text import escape_surrogates
from services.core.gateway import Gateway
from services.core.pipeline import Call, cacheable, replay
from services.core.types import ChatRequest, ChatResult, TextRequest, ToolCall, Usage
from services.state.reply_cache import CachePolicy, Codec, cache_key

# Request fields that cannot change the answer, left out of the cache key.
_INERT = {"stream", "include_usage", "user"}
_INERT_EXTRA = {"metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
_DECIDING = tuple(f.name for f in dataclasses.fields(ChatRequest) if f.name not in _INERT)


def chat_payload(req: ChatRequest) -> dict[str, Any]:
    """The part of a chat request that decides its answer (its messages stay dataclasses:
    cache_key writes them out without the deep copy dataclasses.asdict would make)."""
    payload = {name: getattr(req, name) for name in _DECIDING}
    payload["extra"] = {k: v for k, v in req.extra.items() if k not in _INERT_EXTRA}
    return payload


def _encode(result: ChatResult) -> bytes:
    data = dataclasses.asdict(result)
    del data["headers"]  # a backend's response headers belong to that one call
    text = json.dumps(data, ensure_ascii=False)
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


def deterministic(req: ChatRequest | TextRequest) -> bool:
    """Whether asking again should give the same answer: `temperature` 0, or a `seed` given.

    A request without `temperature` gets the backend's default, which is not 0 (Ollama's is
    0.8), so it is not deterministic; a negative seed is Ollama's and llama.cpp's "pick one at
    random", so it is no seed; `top_p` and `top_k` do not count either way (docs/access.md
    "Reply cache").
    """
    return req.temperature == 0 or (req.seed is not None and req.seed >= 0)


def by_sampling(gw: Gateway, call: Call, is_deterministic: bool) -> Call:
    """The call with its cache policy narrowed by RELAY_CACHE_MODE: under `deterministic` a
    request that samples is neither answered from the cache nor stored (X-Cache: BYPASS), so
    "regenerate" gets a new answer. `off` needs nothing here: the cache is not built."""
    if gw.settings.access.cache_mode != "deterministic" or is_deterministic:
        return call
    return dataclasses.replace(
        call, policy=dataclasses.replace(call.policy, read=False, store=False)
    )


def chat_cache_key(backend: Backend, req: ChatRequest, policy: CachePolicy) -> str:
    """The reply cache's key for a chat request on a backend, within the policy's tenant."""
    return cache_key("chat.completions", policy.tenant, backend.name, chat_payload(req))


__all__ = [
    "CHAT_CODEC",
    "by_sampling",
    "cacheable",
    "chat_cache_key",
    "chat_payload",
    "deterministic",
    "replay",
    "result_from_dict",
]
