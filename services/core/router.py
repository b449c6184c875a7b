"""Map a requested model name to the backend that serves it, and merge the model lists."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from loguru import logger

from services.backends.base import Backend
from services.core.errors import GatewayError, InvalidRequestError, ModelNotFoundError
from services.core.types import CallContext, ModelInfo


class Router:
    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends

    def resolve(self, model: str, ctx: CallContext | None = None) -> Backend:
        """Return the backend for a model: the caller's own-key backend, else the first match."""
        if ctx is not None and ctx.upstream_key:
            for backend in self.backends:
                if backend.accepts_caller_keys:
                    return backend
            raise InvalidRequestError(
                "This gateway does not accept X-Dify-Api-Key; leave the header out."
            )
        for backend in self.backends:
            if any(fnmatchcase(model, p) for p in backend.model_patterns):
                return backend
        raise ModelNotFoundError(
            f"The model `{model}` does not exist on any backend.", param="model"
        )

    def list_models(self) -> list[ModelInfo]:
        """List every backend's models; a backend that fails is skipped unless all fail."""
        models: dict[str, ModelInfo] = {}
        errors: list[GatewayError] = []
        for backend in self.backends:
            try:
                found = backend.list_models()
            except GatewayError as e:
                logger.warning("listing models: {}", e.message)
                errors.append(e)
                continue
            for m in found:
                if m.id not in models and self.resolve_or_none(m.id) is backend:
                    models[m.id] = m
        if errors and len(errors) == len(self.backends):
            raise errors[0]
        return list(models.values())

    def resolve_or_none(self, model: str) -> Backend | None:
        try:
            return self.resolve(model)
        except ModelNotFoundError:
            return None

    def passthrough_backend(self) -> Any:
        """The OpenAI-compatible backend that takes /v1 paths Relay does not serve, if any."""
        return next((b for b in self.backends if getattr(b, "passthrough", False)), None)

    def find_model(self, model_id: str) -> ModelInfo:
        """Return one listed model; a name without a tag also finds its ':latest'."""
        listed = {m.id: m for m in self.list_models()}
        found = listed.get(model_id) or listed.get(f"{model_id}:latest")
        if found is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        return found
