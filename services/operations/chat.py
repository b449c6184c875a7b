"""Chat use cases on the core pipeline: a whole turn, or a primed stream, through the cache."""

from __future__ import annotations

import dataclasses

from services.core import pipeline
from services.core.gateway import Gateway
from services.core.pipeline import Call, Outcome, Streamed
from services.core.types import ChatDelta, ChatRequest, ChatResult
from services.core.usage_estimate import chat_prompt_tokens, complete_usage, fill_usage
from services.operations.chat_cache import CHAT_CODEC, by_sampling, chat_cache_key, deterministic


def complete(gw: Gateway, call: Call, req: ChatRequest) -> Outcome[ChatResult]:
    """Run a whole chat turn on the call's route, or answer it from the cache. Each target
    gets the request under its own upstream model name."""
    call = by_sampling(gw, call, deterministic(req))
    out = pipeline.run(
        gw,
        call,
        lambda t: chat_cache_key(t.backend, t.fit(req), call.policy),
        CHAT_CODEC,
        lambda t: complete_usage(t.backend.chat(t.fit(req), call.ctx), chat_prompt_tokens(req)),
    )
    return dataclasses.replace(out, headers=out.result.headers, usage=out.result.usage)


def stream(gw: Gateway, call: Call, req: ChatRequest) -> Streamed[ChatDelta]:
    """Start a streamed turn: a cached reply replayed, or a live one (primed) that fills it."""
    call = by_sampling(gw, call, deterministic(req))
    return pipeline.cached_stream(
        gw,
        call,
        lambda t: chat_cache_key(t.backend, t.fit(req), call.policy),
        CHAT_CODEC,
        lambda t: fill_usage(t.backend.stream_chat(t.fit(req), call.ctx), chat_prompt_tokens(req)),
    )
