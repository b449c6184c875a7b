"""Map a requested model name to its route (aliases and groups first, then the backends'
`models` globs), and merge the model lists (docs/routing.md)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from loguru import logger

from config import AliasSettings, RouteSettings
from services.backends.base import Backend
from services.core.errors import GatewayError, InvalidRequestError, ModelNotFoundError
from services.core.routes import Health, Route, Target, plain
from services.core.types import CallContext, ModelInfo

Aliases = tuple[tuple[AliasSettings, tuple[Target, ...]], ...]


class Router:
    def __init__(
        self,
        backends: list[Backend],
        routes: RouteSettings | None = None,
        health: Health | None = None,
    ) -> None:
        self.backends = backends
        self.routes = routes or RouteSettings()
        self.health = health or Health(self.routes.breaker_failures, self.routes.breaker_seconds)
        by_name = {b.name: b for b in backends}

        def built(aliases: tuple[AliasSettings, ...]) -> Aliases:
            return tuple(
                (
                    a,
                    tuple(
                        Target(by_name[t.backend], t.model, t.weight, t.priority, configured=True)
                        for t in a.targets
                    ),
                )
                for a in aliases
            )

        self._aliases = built(self.routes.aliases)
        self._key_aliases = {k: built(v) for k, v in self.routes.key_aliases.items()}

    def resolve(self, model: str, ctx: CallContext | None = None) -> Route:
        """Return the route for a model: the caller's own-key backend; else the key's alias,
        a global alias, or a group (its targets in this request's order); else the first
        backend whose `models` globs match."""
        if ctx is not None and ctx.upstream_key:
            for backend in self.backends:
                if backend.accepts_caller_keys:
                    return plain(backend, model)
            raise InvalidRequestError(
                "This gateway does not accept X-Dify-Api-Key; leave the header out."
            )
        targets = self.alias(model, ctx.key_name if ctx is not None else None)
        if targets is not None:
            keyed = min(targets, key=lambda t: t.priority)
            return Route(model, self.health.order(targets), keyed)
        return plain(self.backend_for(model), model)

    def alias(self, model: str, key_name: str | None) -> tuple[Target, ...] | None:
        """The targets an alias names: exact names before globs, the key's before global."""
        tables = [self._key_aliases.get(key_name or "", ()), self._aliases]
        for globs in (False, True):
            for table in tables:
                for alias, targets in table:
                    if alias.is_glob == globs and alias.matches(model):
                        return targets
        return None

    def aliases_for(self, key_name: str | None) -> dict[str, tuple[Target, ...]]:
        """The names (not globs) a key may call by alias, the key's own over global ones."""
        out: dict[str, tuple[Target, ...]] = {}
        for table in (self._key_aliases.get(key_name or "", ()), self._aliases):
            for alias, targets in table:
                if not alias.is_glob:
                    out.setdefault(alias.name, targets)
        return out

    def configured_targets(self) -> list[Target]:
        """Every distinct target the routing table names, in table order."""
        seen: dict[str, Target] = {}
        for table in (self._aliases, *self._key_aliases.values()):
            for _alias, targets in table:
                for t in targets:
                    seen.setdefault(t.name, t)
        return list(seen.values())

    def backend_for(self, model: str) -> Backend:
        """The first backend whose `models` globs match a real model name (no aliases)."""
        for backend in self.backends:
            if any(fnmatchcase(model, p) for p in backend.model_patterns):
                return backend
        raise ModelNotFoundError(
            f"The model `{model}` does not exist on any backend.", param="model"
        )

    def list_models(self, key_name: str | None = None) -> list[ModelInfo]:
        """List every backend's models, then the aliases the key may call by name (an alias
        replaces a real model of the same name); a backend that fails is skipped unless all
        fail."""
        listed = self._backend_models()
        aliases = self.aliases_for(key_name)
        found = {m.id: m for m in listed}
        out = [m for m in listed if m.id not in aliases]
        for name, targets in aliases.items():
            first = found.get(targets[0].model)
            created = first.created if first is not None else 0
            out.append(ModelInfo(name, created, "relay", tuple(t.name for t in targets)))
        return out

    def _backend_models(self) -> list[ModelInfo]:
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
        """The backend a real model name is routed to (no aliases), or None."""
        try:
            return self.backend_for(model)
        except ModelNotFoundError:
            return None

    def passthrough_backend(self) -> Any:
        """The OpenAI-compatible backend that takes /v1 paths Relay does not serve, if any."""
        return next((b for b in self.backends if getattr(b, "passthrough", False)), None)

    def find_model(self, model_id: str, key_name: str | None = None) -> ModelInfo:
        """Return one listed model; a name without a tag also finds its ':latest'."""
        listed = {m.id: m for m in self.list_models(key_name)}
        found = listed.get(model_id) or listed.get(f"{model_id}:latest")
        if found is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        return found
