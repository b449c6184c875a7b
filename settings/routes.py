"""Model aliases and groups (`[models."NAME"]`, `[keys.NAME.aliases."NAME"]`) and the retry
budget and circuit breaker that routing uses (`[routing]`). See docs/routing.md.

Reads no environment itself (config.py hands it the merged one); every bad value raises
ConfigError with one line naming the setting. Imports only the standard library and settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from settings.backends import BackendSettings
from settings.values import ConfigError, as_float, as_int, as_str, as_table

MAX_TARGETS = 16  # targets in one group
MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """One place a name may be served: an upstream model on a backend."""

    model: str
    backend: str  # resolved at start-up from the backends' `models` globs when not pinned
    weight: int = 1
    priority: int = 1  # lower is tried first; equal priorities share the load by weight


@dataclass(frozen=True, slots=True)
class AliasSettings:
    """A name (or a glob such as `claude-*`) callers use, and the targets that serve it."""

    name: str
    targets: tuple[TargetSettings, ...]

    @property
    def is_glob(self) -> bool:
        return any(c in self.name for c in "*?[")

    def matches(self, model: str) -> bool:
        return fnmatchcase(model, self.name) if self.is_glob else model == self.name


@dataclass(frozen=True, slots=True)
class RouteSettings:
    aliases: tuple[AliasSettings, ...] = ()
    key_aliases: Mapping[str, tuple[AliasSettings, ...]] = field(default_factory=dict)
    max_attempts: int = 3  # targets one request may try
    deadline: float = 60.0  # seconds after which no further target is tried
    breaker_failures: int = 3  # consecutive failures that open a target's circuit
    breaker_seconds: float = 30.0  # how long an open circuit skips its target (doubles, to 10x)


def route_settings(
    env: Mapping[str, str], doc: Mapping[str, Any], backends: tuple[BackendSettings, ...]
) -> RouteSettings:
    table = as_table(doc, "routing")

    def pick(var: str, key: str, default: Any) -> tuple[str, Any]:
        if env.get(var, "") != "":
            return var, env[var]
        if key in table:
            return f"RELAY_CONFIG routing.{key}", table[key]
        return var, default

    models = as_table(doc, "models")
    key_aliases: dict[str, tuple[AliasSettings, ...]] = {}
    for name, key_table in as_table(doc, "keys").items():
        if isinstance(key_table, dict) and "aliases" in key_table:
            where = f"RELAY_CONFIG keys.{name}.aliases"
            if not isinstance(key_table["aliases"], dict):
                raise ConfigError(f"{where} must be a table of names")
            key_aliases[name] = _aliases(where, key_table["aliases"], backends)
    return RouteSettings(
        aliases=_aliases("RELAY_CONFIG models", models, backends),
        key_aliases=key_aliases,
        max_attempts=as_int(*pick("RELAY_ROUTE_MAX_ATTEMPTS", "max_attempts", 3), lo=1, hi=16),
        deadline=as_float(*pick("RELAY_ROUTE_DEADLINE_SECONDS", "deadline_seconds", 60.0), lo=0.1),
        breaker_failures=as_int(
            *pick("RELAY_ROUTE_BREAKER_FAILURES", "breaker_failures", 3), lo=1, hi=1000
        ),
        breaker_seconds=as_float(
            *pick("RELAY_ROUTE_BREAKER_SECONDS", "breaker_seconds", 30.0), lo=0.1
        ),
    )


def _aliases(
    where: str, tables: Mapping[str, Any], backends: tuple[BackendSettings, ...]
) -> tuple[AliasSettings, ...]:
    out = []
    for name, table in tables.items():
        at = f'{where}."{name}"'
        if not name or len(name) > 256 or any(c.isspace() or ord(c) < 32 for c in name):
            raise ConfigError(f"{at}: a model name must be 1-256 characters without spaces")
        if not isinstance(table, dict):
            raise ConfigError(f'{at} must be a table, e.g. target = "qwen3:8b"')
        if ("target" in table) == ("targets" in table):
            raise ConfigError(f'{at} needs exactly one of target = "model" or targets = [...]')
        unknown = set(table) - {"target", "targets", "backend"}
        if unknown:
            raise ConfigError(f"{at} has unknown setting {sorted(unknown)[0]!r}")
        if "target" in table:
            raw: list[Any] = [{"model": table["target"], "backend": table.get("backend")}]
        elif "backend" in table:
            raise ConfigError(f"{at}.backend goes with target; give each of targets its backend")
        else:
            raw = table["targets"]
            if not isinstance(raw, list) or not raw or len(raw) > MAX_TARGETS:
                raise ConfigError(f"{at}.targets must be a list of 1 to {MAX_TARGETS} targets")
        targets = tuple(_target(f"{at}.targets[{i}]", t, i, backends) for i, t in enumerate(raw))
        seen = {(t.backend, t.model) for t in targets}
        if len(seen) != len(targets):
            raise ConfigError(f"{at}.targets names the same model on the same backend twice")
        out.append(AliasSettings(name, targets))
    return tuple(out)


def _target(at: str, raw: Any, index: int, backends: tuple[BackendSettings, ...]) -> TargetSettings:
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f'{at} must be a table like {{model = "qwen3:8b", backend = "gpu1"}}')
    unknown = set(raw) - {"model", "backend", "weight", "priority"}
    if unknown:
        raise ConfigError(f"{at} has unknown setting {sorted(unknown)[0]!r}")
    model = as_str(f"{at}.model", raw.get("model"))
    if not model or any(c in model for c in "*?["):
        raise ConfigError(f"{at}.model must be one model name, not a glob")
    pinned = raw.get("backend")
    if pinned is not None:
        pinned = as_str(f"{at}.backend", pinned)
        match = next((b for b in backends if b.name == pinned), None)
        if match is None:
            names = ", ".join(b.name for b in backends)
            raise ConfigError(f"{at}.backend {pinned!r} is not a configured backend ({names})")
    else:
        match = next((b for b in backends if any(fnmatchcase(model, p) for p in b.models)), None)
        if match is None:
            raise ConfigError(f"{at}.model {model!r} matches no backend's models; pin a backend")
    return TargetSettings(
        model=model,
        backend=match.name,
        weight=as_int(f"{at}.weight", raw.get("weight", 1), lo=1, hi=MAX_WEIGHT),
        priority=as_int(f"{at}.priority", raw.get("priority", index + 1), lo=0, hi=1000),
    )
