"""OpenAI's model objects: `GET /v1/models` and `GET /v1/models/{id}` (Anthropic's shape is in
anthropic_reply.py). Pure."""

from __future__ import annotations

from typing import Any

from services.core.types import ModelInfo


def render_model(info: ModelInfo) -> dict[str, Any]:
    model = {"id": info.id, "object": "model", "created": info.created, "owned_by": info.owned_by}
    if info.alias_of:  # an extension field: what the alias routes to (docs/routing.md)
        model["relay"] = {"alias_of": list(info.alias_of)}
    return model


def render_model_list(models: list[ModelInfo]) -> dict[str, Any]:
    return {"object": "list", "data": [render_model(m) for m in models]}
