"""The ledger's database: opening it, writing batches of records and their daily roll-ups,
pruning old rows (docs/design.md §10).

SQLAlchemy Core, so the same statements serve SQLite now and PostgreSQL later; its engine pools
connections and speaks the dialect. SQLite runs in WAL mode with a busy timeout, so several
gunicorn workers on one machine write one file: a writer waits for the lock, readers do not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from services.usage import schema
from services.usage.record import UsageRecord
from services.usage.schema import (
    DAILY_KEYS,
    DAILY_SUMS,
    HOURLY_DAYS,
    HOURLY_KEYS,
    usage_daily,
    usage_hourly,
    usage_records,
)

BUSY_TIMEOUT_SECONDS = 10.0  # how long a writer waits for another worker's transaction
PRUNE_CHUNK = 5000  # rows deleted per transaction, so no one transaction holds the lock long
WRITE = {"relay_write": True}  # execution option: this transaction writes (BEGIN IMMEDIATE)


def open_engine(url: str) -> Engine:
    """An engine for the ledger's URL; a SQLite file's directory is created if missing."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError("only SQLite is supported for now")
    path = parsed.database or ""
    if path and path != ":memory:" and not path.startswith("file:"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
    _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite begins transactions lazily and on its own; Relay begins them itself, so that a
    # writing transaction takes SQLite's write lock first (BEGIN IMMEDIATE) and cannot fail
    # half-way with "database is locked" when another worker writes (SQLAlchemy's pysqlite
    # documentation, "Serializable isolation / Savepoints / Transactional DDL").
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        writes = conn.get_execution_options().get("relay_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


class UsageStore:
    """The ledger's tables in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> UsageStore:
        return cls(open_engine(url))

    def migrate(self) -> list[int]:
        """Bring the schema up to date (idempotent); return the steps applied now."""
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            return schema.migrate(conn)

    def version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            return int(conn.scalar(sa.select(sa.func.max(schema.schema_version.c.version))) or 0)

    def write(self, records: Sequence[UsageRecord]) -> None:
        """Write a batch of records and add them to their daily roll-ups, in one transaction."""
        if not records:
            return
        rows = [{**r.row(), "day": r.ts.date()} for r in records]
        daily = _roll_up(records)
        upsert = sqlite.insert(usage_daily)
        upsert = upsert.on_conflict_do_update(
            index_elements=list(DAILY_KEYS),
            set_={name: usage_daily.c[name] + upsert.excluded[name] for name in DAILY_SUMS},
        )
        hourly = sqlite.insert(usage_hourly)
        hourly = hourly.on_conflict_do_update(
            index_elements=list(HOURLY_KEYS),
            set_={name: usage_hourly.c[name] + hourly.excluded[name] for name in DAILY_SUMS},
        )
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(sa.insert(usage_records), rows)
            conn.execute(upsert, daily)
            conn.execute(hourly, _roll_up(records, HOURLY_KEYS, _hour_names))

    def prune(self, now: datetime, raw_days: int, daily_days: int) -> int:
        """Delete raw records older than `raw_days` and roll-ups older than `daily_days` (0: keep
        them); return the raw rows deleted."""
        deleted = 0
        if raw_days > 0:
            cutoff = now - timedelta(days=raw_days)
            old = sa.select(usage_records.c.id).where(usage_records.c.ts < cutoff)
            while True:
                chunk = old.limit(PRUNE_CHUNK).scalar_subquery()
                with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
                    count = conn.execute(
                        sa.delete(usage_records).where(usage_records.c.id.in_(chunk))
                    ).rowcount
                deleted += count
                if count < PRUNE_CHUNK:
                    break
                time.sleep(0)  # let the worker's other work run between chunks
        first_hour = now - timedelta(days=HOURLY_DAYS)
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(sa.delete(usage_hourly).where(usage_hourly.c.hour < first_hour))
        if daily_days > 0:
            first_kept = (now - timedelta(days=daily_days)).date()
            with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
                conn.execute(sa.delete(usage_daily).where(usage_daily.c.day < first_kept))
        return deleted


def _day_names(r: UsageRecord) -> tuple[Any, ...]:
    return (r.ts.date(), r.key_name or "", r.model or "", r.backend or "", r.endpoint)


def _hour_names(r: UsageRecord) -> tuple[Any, ...]:
    return (r.ts.replace(minute=0, second=0, microsecond=0), r.key_name or "", r.model or "")


def _roll_up(
    records: Iterable[UsageRecord],
    keys: Sequence[str] = DAILY_KEYS,
    names_of: Callable[[UsageRecord], tuple[Any, ...]] = _day_names,
) -> list[dict[str, Any]]:
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        names = names_of(r)
        row = sums.get(names)
        if row is None:
            row = sums[names] = {
                **dict(zip(keys, names, strict=True)),
                **dict.fromkeys(DAILY_SUMS, 0),
            }
        row["requests"] += 1
        row["errors"] += int(is_error(r.status, r.error_type))
        row["streamed"] += int(r.streamed)
        row["abandoned"] += int(r.abandoned)
        row["cache_hits"] += int(r.cache == "HIT")
        row["prompt_tokens"] += r.prompt_tokens
        row["completion_tokens"] += r.completion_tokens
        row["reasoning_tokens"] += r.reasoning_tokens or 0
        row["cached_tokens"] += r.cached_tokens or 0
        row["duration_ms"] += r.duration_ms
    return list(sums.values())


def is_error(status: int, error_type: str | None) -> bool:
    """A request counts as an error when it was refused or failed, a stream's failure too."""
    return status >= 400 or error_type is not None
