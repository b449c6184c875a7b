"""Embeddings use case: route the request to the backend that serves the model."""

from __future__ import annotations

from services.backends.base import Backend
from services.gateway import Gateway
from services.types import CallContext, EmbeddingRequest, EmbeddingResult


def embed(gw: Gateway, req: EmbeddingRequest, ctx: CallContext) -> tuple[Backend, EmbeddingResult]:
    """Embed the inputs on the backend that serves the model."""
    backend = gw.router.resolve(req.model, ctx)
    return backend, backend.embed(req, ctx)
