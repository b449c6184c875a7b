"""Embeddings use case: route to the backend that serves the model, through the reply cache."""

from __future__ import annotations

import dataclasses
import json

from services.core import pipeline
from services.core.gateway import Gateway
from services.core.pipeline import Call, Outcome
from services.core.types import EmbeddingRequest, EmbeddingResult
from services.state.reply_cache import Codec, cache_key


def _encode(result: EmbeddingResult) -> bytes:
    return json.dumps(dataclasses.asdict(result)).encode()


def _decode(raw: bytes) -> EmbeddingResult:
    data = json.loads(raw)
    return EmbeddingResult(tuple(tuple(v) for v in data["vectors"]), data["prompt_tokens"])


EMBEDDING_CODEC = Codec(_encode, _decode, lambda _result: True)


def _payload(req: EmbeddingRequest) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(req).items() if k != "user"}


def embed(gw: Gateway, call: Call, req: EmbeddingRequest) -> Outcome[EmbeddingResult]:
    """Embed the inputs, or answer from the cache."""
    return pipeline.run(
        gw,
        call,
        lambda t: cache_key("embeddings", call.policy.tenant, t.backend.name, _payload(t.fit(req))),
        EMBEDDING_CODEC,
        lambda t: t.backend.embed(t.fit(req), call.ctx),
    )
