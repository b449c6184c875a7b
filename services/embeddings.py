"""Embeddings use case: route to the backend that serves the model, through the reply cache."""

from __future__ import annotations

import dataclasses
import json

from services.backends.base import Backend
from services.cached_chat import cacheable
from services.gateway import Gateway
from services.keys import ApiKey, require_model
from services.reply_cache import CachePolicy, Codec, cache_key
from services.types import CallContext, EmbeddingRequest, EmbeddingResult


def _encode(result: EmbeddingResult) -> bytes:
    return json.dumps(dataclasses.asdict(result)).encode()


def _decode(raw: bytes) -> EmbeddingResult:
    data = json.loads(raw)
    return EmbeddingResult(tuple(tuple(v) for v in data["vectors"]), data["prompt_tokens"])


EMBEDDING_CODEC = Codec(_encode, _decode, lambda _result: True)


def _embed(
    gw: Gateway, backend: Backend, req: EmbeddingRequest, ctx: CallContext
) -> EmbeddingResult:
    with gw.gates.slot(backend.name, ctx.key_name):
        return backend.embed(req, ctx)


def _payload(req: EmbeddingRequest) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(req).items() if k != "user"}


def route(gw: Gateway, req: EmbeddingRequest, ctx: CallContext, key: ApiKey) -> Backend:
    """Check that the key may use the model; return the backend that serves it.

    Separate from embed() so the access log names the backend even when embedding fails.
    """
    require_model(key, req.model)
    return gw.router.resolve(req.model, ctx)


def embed(
    gw: Gateway, backend: Backend, req: EmbeddingRequest, ctx: CallContext, policy: CachePolicy
) -> tuple[EmbeddingResult, str]:
    """Embed the inputs on `backend`, or answer from the cache; also says HIT, MISS or BYPASS."""
    return gw.cache.run(
        lambda: cache_key("embeddings", policy.tenant, backend.name, _payload(req)),
        cacheable(backend, ctx, policy),
        lambda: _embed(gw, backend, req, ctx),
        EMBEDDING_CODEC,
    )
