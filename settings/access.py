"""Settings for who may call and how much: named keys (`[keys.NAME]`), request and token limits,
the reply cache and Redis. Part of the configuration: config.py builds these into Settings.

Reads no environment itself (config.py hands it the merged one); every bad value raises
ConfigError with one line naming the setting. Imports only the standard library and config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from settings.budgets import NO_BUDGETS, Budgets, BudgetSettings, budget_settings, key_budgets
from settings.environment import read_environment
from settings.values import (
    ConfigError,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_str,
    as_table,
    read_toml,
)

KEY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
# What the reply cache keeps (docs/access.md "Reply cache"): chat and completions replies only
# for deterministic requests (temperature 0 or a seed) and embeddings always; every reply; none.
CACHE_MODES = ("deterministic", "all", "off")
LIMIT_FIELDS = ("requests_per_minute", "requests_per_hour", "requests_per_day", "tokens_per_minute")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-key limits. None means "not set here" (fall back to the default); 0 means no limit."""

    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None

    def over(self, defaults: Limits) -> Limits:
        """Return these limits with every unset one taken from `defaults`."""
        values = [getattr(self, f.name) for f in fields(self)]
        base = [getattr(defaults, f.name) for f in fields(defaults)]
        return Limits(*(v if v is not None else b for v, b in zip(values, base, strict=True)))


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A named key from `[keys.NAME]`; only the SHA-256 digest of its secret is kept."""

    name: str
    digest: str
    models: tuple[str, ...] = ("*",)
    expires: datetime | None = None
    enabled: bool = True
    limits: Limits = Limits()
    cache_group: str | None = None
    ollama_admin: bool = False  # may manage models on Ollama backends (docs/ollama.md)
    budgets: Budgets = Budgets()  # tokens and requests per day and month (docs/access.md "Budgets")


@dataclass(frozen=True, slots=True)
class AccessSettings:
    keys: tuple[KeySettings, ...] = ()
    limits: Limits = Limits(0, 0, 0, 0)
    unauthenticated_per_minute: int = 30
    status_per_minute: int = 60  # loads of / and /ready per client address
    limits_fail_open: bool = True
    cache_ttl: float = 300.0
    cache_max_entries: int = 1024
    cache_max_bytes: int = 64 * 1024 * 1024  # per worker, in memory
    cache_max_entry_bytes: int = 1024 * 1024  # one reply; larger ones are not cached
    cache_mode: str = "deterministic"  # one of CACHE_MODES
    budgets: BudgetSettings = BudgetSettings(NO_BUDGETS)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str | None = None
    timeout: float = 1.0


def read_keys(path: str, environ: Mapping[str, str] | None = None) -> tuple[KeySettings, ...]:
    """Read the `[keys.NAME]` tables of a config file again (used when the file changes)."""
    return _named_keys(read_environment(environ), read_toml(path))


def _pick(
    env: Mapping[str, str], var: str, table: Mapping[str, Any], key: str, default: Any
) -> Any:
    if env.get(var, "") != "":
        return var, env[var]
    if key in table:
        return f"RELAY_CONFIG {key}", table[key]
    return var, default


def access_settings(env: Mapping[str, str], doc: Mapping[str, Any]) -> AccessSettings:
    limits, cache = as_table(doc, "limits"), as_table(doc, "cache")
    env_names = {
        "requests_per_minute": "RELAY_REQUESTS_PER_MINUTE",
        "requests_per_hour": "RELAY_REQUESTS_PER_HOUR",
        "requests_per_day": "RELAY_REQUESTS_PER_DAY",
        "tokens_per_minute": "RELAY_TOKENS_PER_MINUTE",
    }
    defaults = Limits(
        *(as_int(*_pick(env, env_names[f], limits, f, 0), lo=0) for f in LIMIT_FIELDS)
    )
    fail_open = as_bool(*_pick(env, "RELAY_LIMITS_FAIL_OPEN", limits, "fail_open", True))
    return AccessSettings(
        keys=_named_keys(env, doc),
        limits=defaults,
        unauthenticated_per_minute=as_int(
            *_pick(
                env, "RELAY_UNAUTHENTICATED_PER_MINUTE", limits, "unauthenticated_per_minute", 30
            ),
            lo=0,
        ),
        status_per_minute=as_int(
            *_pick(env, "RELAY_STATUS_PER_MINUTE", limits, "status_per_minute", 60), lo=0
        ),
        limits_fail_open=fail_open,
        cache_ttl=as_float(*_pick(env, "RELAY_CACHE_TTL", cache, "ttl", 300.0), lo=0.0),
        cache_max_entries=as_int(
            *_pick(env, "RELAY_CACHE_MAX_ENTRIES", cache, "max_entries", 1024), lo=1
        ),
        cache_max_bytes=as_int(
            *_pick(env, "RELAY_CACHE_MAX_BYTES", cache, "max_bytes", 64 * 1024 * 1024), lo=1024
        ),
        cache_max_entry_bytes=as_int(
            *_pick(env, "RELAY_CACHE_MAX_ENTRY_BYTES", cache, "max_entry_bytes", 1024 * 1024),
            lo=1,
        ),
        cache_mode=_cache_mode(env, cache),
        budgets=budget_settings(env, doc, fail_open),
    )


def _cache_mode(env: Mapping[str, str], cache: Mapping[str, Any]) -> str:
    name, value = _pick(env, "RELAY_CACHE_MODE", cache, "mode", "deterministic")
    return as_choice(name, value, CACHE_MODES)


def redis_settings(env: Mapping[str, str], doc: Mapping[str, Any]) -> RedisSettings:
    table = as_table(doc, "redis")
    name, url = _pick(env, "REDIS_URL", table, "url", "")
    url = as_str(name, url)
    if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a redis:// URL like redis://127.0.0.1:6379/0")
    return RedisSettings(
        url=url or None,
        timeout=as_float(*_pick(env, "RELAY_REDIS_TIMEOUT", table, "timeout", 1.0), lo=0.01),
    )


def _named_keys(env: Mapping[str, str], doc: Mapping[str, Any]) -> tuple[KeySettings, ...]:
    tables = as_table(doc, "keys")
    out = []
    for name, table in tables.items():
        where = f"RELAY_CONFIG keys.{name}"
        if not KEY_NAME.match(name):
            raise ConfigError(f"{where}: a key name may use letters, digits, '-' and '_' only")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        models = table.get("models", ["*"])
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"{where}.models must be a list of model names or globs")
        raw_limits = table.get("limits", {})
        if not isinstance(raw_limits, dict) or set(raw_limits) - set(LIMIT_FIELDS):
            raise ConfigError(f"{where}.limits may only set {', '.join(LIMIT_FIELDS)}")
        group = table.get("cache_group")
        out.append(
            KeySettings(
                name=name,
                digest=_key_digest(env, where, table),
                models=tuple(models),
                expires=_expiry(f"{where}.expires", table.get("expires")),
                enabled=as_bool(f"{where}.enabled", table.get("enabled", True)),
                limits=Limits(
                    *(
                        as_int(f"{where}.limits.{f}", raw_limits[f], lo=0)
                        if f in raw_limits
                        else None
                        for f in LIMIT_FIELDS
                    )
                ),
                cache_group=as_str(f"{where}.cache_group", group) if group is not None else None,
                ollama_admin=as_bool(f"{where}.ollama_admin", table.get("ollama_admin", False)),
                budgets=key_budgets(where, table),
            )
        )
    return tuple(out)


def _key_digest(env: Mapping[str, str], where: str, table: Mapping[str, Any]) -> str:
    if ("hash" in table) == ("env" in table):
        raise ConfigError(f'{where} needs exactly one of hash = "sha256:..." or env = "VAR"')
    if "hash" in table:
        value = table["hash"]
        if not isinstance(value, str) or not _HASH.match(value.strip().lower()):
            raise ConfigError(f'{where}.hash must be "sha256:" and 64 hex digits')
        return value.strip().lower().removeprefix("sha256:")
    var = as_str(f"{where}.env", table["env"])
    secret = env.get(var, "").strip()
    if len(secret) < 8 or any(c.isspace() for c in secret):
        raise ConfigError(f"{where}.env names {var}, which must hold a key of 8+ characters")
    return hashlib.sha256(secret.encode()).hexdigest()


def _expiry(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a date-time like 2027-01-01T00:00:00Z") from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ConfigError(f"{name} must be a date-time like 2027-01-01T00:00:00Z")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
