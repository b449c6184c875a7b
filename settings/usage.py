"""Settings for the usage ledger (docs/operations.md "Usage"): on or off, the database, how long
rows are kept, and the per-worker queue. Part of the configuration: config.py builds these into
Settings. Reads no environment itself; imports only the standard library and settings.values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from settings.values import ConfigError, as_bool, as_float, as_int, as_str, as_table

DEFAULT_DATABASE_URL = "sqlite:///data/relay.db"
# The schemes the store knows how to open: an SQLite file, or a PostgreSQL server (psycopg 3;
# `postgres://` and `postgresql+psycopg://` are taken as `postgresql://`).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class UsageSettings:
    enabled: bool = True
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # may hold a password
    retention_days: int = 90  # raw records; 0 keeps them forever
    daily_retention_days: int = 0  # daily roll-ups; 0 keeps them forever
    queue_size: int = 10_000  # records waiting per worker; more are dropped and counted
    flush_seconds: float = 1.0  # the writer writes what is queued this often
    pool_size: int = 5  # PostgreSQL connections per worker (the writer's and readers')


def usage_settings(env: Mapping[str, str], doc: Mapping[str, Any]) -> UsageSettings:
    table = as_table(doc, "usage")

    def pick(var: str, key: str, default: Any) -> tuple[str, Any]:
        if env.get(var, "") != "":
            return var, env[var]
        if key in table:
            return f"RELAY_CONFIG usage.{key}", table[key]
        return var, default

    name, url = pick("RELAY_DATABASE_URL", "database_url", DEFAULT_DATABASE_URL)
    url = as_str(name, url)
    scheme, _, driver = urlsplit(url).scheme.partition("+")
    if scheme not in DATABASE_SCHEMES or driver not in ("", "psycopg", "pysqlite"):
        # Never the URL itself: it may hold a password.
        raise ConfigError(
            f"{name} must be a sqlite:/// URL like {DEFAULT_DATABASE_URL} or a"
            " postgresql://user:password@host:5432/database URL"
        )
    return UsageSettings(
        enabled=as_bool(*pick("RELAY_USAGE", "enabled", True)),
        database_url=url,
        retention_days=as_int(*pick("RELAY_USAGE_RETENTION_DAYS", "retention_days", 90), lo=0),
        daily_retention_days=as_int(
            *pick("RELAY_USAGE_DAILY_RETENTION_DAYS", "daily_retention_days", 0), lo=0
        ),
        queue_size=as_int(*pick("RELAY_USAGE_QUEUE", "queue_size", 10_000), lo=1, hi=1_000_000),
        flush_seconds=as_float(*pick("RELAY_USAGE_FLUSH_SECONDS", "flush_seconds", 1.0), lo=0.01),
        pool_size=as_int(*pick("RELAY_DATABASE_POOL_SIZE", "pool_size", 5), lo=1, hi=100),
    )
