"""Embeddings use case: route to the backend that serves the model, through the reply cache."""

from __future__ import annotations

import dataclasses
import json

from services.backends.base import Backend
from services.cached_chat import cacheable
from services.errors import GatewayError
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


def embed(
    gw: Gateway, req: EmbeddingRequest, ctx: CallContext, key: ApiKey, policy: CachePolicy
) -> tuple[Backend, EmbeddingResult, str]:
    """Embed the inputs, or answer from the cache; also says HIT, MISS or BYPASS."""
    require_model(key, req.model)
    backend = gw.router.resolve(req.model, ctx)
    try:
        result, status = gw.cache.run(
            lambda: cache_key("embeddings", policy.tenant, backend.name, _payload(req)),
            cacheable(backend, ctx, policy),
            lambda: _embed(gw, backend, req, ctx),
            EMBEDDING_CODEC,
        )
    except GatewayError as e:
        e.backend = backend.name  # the access log and metrics name it, as for chat
        raise
    return backend, result, status
