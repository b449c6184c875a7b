"""The ledger's tables and the migration runner (docs/design.md §10.2).

Migrations are numbered steps applied in order, each once: the `schema_version` table lists the
steps a database has, and the runner applies the missing ones in one write transaction, which
SQLite takes before reading the version (BEGIN IMMEDIATE), so workers starting together apply
each step once. A step, once released, never changes: a later change is a new step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Upper bounds of the text columns; longer values are cut before they are written.
KEY_LENGTH = 64
MODEL_LENGTH = 256
ENDPOINT_LENGTH = 256
SHORT_LENGTH = 64

metadata = sa.MetaData()
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid is an INTEGER key

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("key_name", sa.String(KEY_LENGTH)),
    sa.Column("model", sa.String(MODEL_LENGTH)),
    sa.Column("backend", sa.String(SHORT_LENGTH)),
    sa.Column("upstream_model", sa.String(MODEL_LENGTH)),
    sa.Column("endpoint", sa.String(ENDPOINT_LENGTH), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error_type", sa.String(SHORT_LENGTH)),
    sa.Column("error_code", sa.String(SHORT_LENGTH)),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger),
    sa.Column("cached_tokens", sa.BigInteger),
    sa.Column("tokens_estimated", sa.Boolean, nullable=False),
    sa.Column("cache", sa.String(8)),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("first_token_ms", sa.Float),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("abandoned", sa.Boolean, nullable=False),
    sa.Column("client", sa.String(SHORT_LENGTH)),
    sa.Index("usage_records_ts", "ts"),
    sa.Index("usage_records_key_ts", "key_name", "ts"),
)

# The names a daily roll-up is kept by; a missing one is '' (a key column cannot be NULL).
DAILY_KEYS = ("day", "key_name", "model", "backend", "endpoint")
# The sums it keeps.
DAILY_SUMS = (
    "requests",
    "errors",
    "streamed",
    "abandoned",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "duration_ms",
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("key_name", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("model", sa.String(MODEL_LENGTH), primary_key=True),
    sa.Column("backend", sa.String(SHORT_LENGTH), primary_key=True),
    sa.Column("endpoint", sa.String(ENDPOINT_LENGTH), primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in DAILY_SUMS[:-1]),
    sa.Column("duration_ms", sa.Float, nullable=False),
)


# The hourly roll-ups the dashboard draws its 24-hour and 7-day views from: per hour, key and
# model, the same sums as the daily ones; kept HOURLY_DAYS days (docs/design.md §10.4).
HOURLY_KEYS = ("hour", "key_name", "model")
HOURLY_DAYS = 8

usage_hourly = sa.Table(
    "usage_hourly",
    metadata,
    sa.Column("hour", sa.DateTime, primary_key=True),
    sa.Column("key_name", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("model", sa.String(MODEL_LENGTH), primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in DAILY_SUMS[:-1]),
    sa.Column("duration_ms", sa.Float, nullable=False),
)


def hour_of(conn: Connection, column: Any) -> Any:
    """A record's `ts` cut to its hour, in the database's own words and in the form the column
    keeps a datetime (SQLite: text, `2026-11-30 08:00:00.000000`)."""
    if conn.dialect.name == "sqlite":
        return sa.func.substr(column, 1, 13) + ":00:00.000000"
    return sa.func.date_trunc("hour", column)


def _step_1(conn: Connection) -> None:
    """The raw records and the daily roll-ups."""
    # The tables as version 1 made them; when a later step changes one, this step keeps
    # version 1's own copy of it.
    usage_records.create(conn)
    usage_daily.create(conn)


def _step_2(conn: Connection) -> None:
    """The hourly roll-ups, filled from the raw records of their last HOURLY_DAYS days."""
    usage_hourly.create(conn)
    r = usage_records.c
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=HOURLY_DAYS)
    hour = hour_of(conn, r.ts).label("hour")
    key_name = sa.func.coalesce(r.key_name, "").label("key_name")
    model = sa.func.coalesce(r.model, "").label("model")
    error = sa.or_(r.status >= 400, r.error_type.is_not(None))

    def count(condition: Any) -> Any:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    sums = (
        sa.func.count(),
        count(error),
        count(r.streamed),
        count(r.abandoned),
        count(r.cache == "HIT"),
        sa.func.sum(r.prompt_tokens),
        sa.func.sum(r.completion_tokens),
        sa.func.sum(sa.func.coalesce(r.reasoning_tokens, 0)),
        sa.func.sum(sa.func.coalesce(r.cached_tokens, 0)),
        sa.func.sum(r.duration_ms),
    )
    rolled = (
        sa.select(hour, key_name, model, *sums).where(r.ts >= since).group_by(hour, key_name, model)
    )
    conn.execute(sa.insert(usage_hourly).from_select([*HOURLY_KEYS, *DAILY_SUMS], rolled))


STEPS: tuple[Callable[[Connection], None], ...] = (_step_1, _step_2)
LATEST = len(STEPS)


def migrate(conn: Connection) -> list[int]:
    """Apply the steps this database lacks, inside the caller's write transaction; return them."""
    schema_version.create(conn, checkfirst=True)
    done = set(conn.scalars(sa.select(schema_version.c.version)))
    applied = []
    for number, step in enumerate(STEPS, start=1):
        if number in done:
            continue
        step(conn)
        now = datetime.now(UTC).replace(tzinfo=None)
        conn.execute(sa.insert(schema_version).values(version=number, applied_at=now))
        applied.append(number)
    return applied
