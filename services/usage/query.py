"""Reading the ledger: usage summed by key, model, day, backend or endpoint, and raw records.

The same query serves the admin API, a key's own `/v1/usage` and the `flask usage` command
(docs/operations.md "Usage"). Bounds given as dates read the daily roll-ups, which are kept
longer; bounds with a time of day read the raw records.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from services.core.errors import InvalidRequestError, UpstreamUnavailableError
from services.usage.record import COLUMNS
from services.usage.schema import DAILY_SUMS, usage_daily, usage_records

# What `group_by` may name, and the column each reads.
GROUPS = {
    "key": "key_name",
    "model": "model",
    "day": "day",
    "backend": "backend",
    "endpoint": "endpoint",
}
MAX_ROWS = 10_000
DEFAULT_RECORDS, MAX_RECORDS = 100, 1000
Bound = date | datetime
DEFAULT_GROUPS = ("key", "model", "day")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: tuple[str, ...] = DEFAULT_GROUPS
    since: Bound | None = None  # inclusive
    until: Bound | None = None  # a date: that whole day included; a time: up to it, excluded
    key: str | None = None
    model: str | None = None
    request_id: str | None = None  # records only
    limit: int = MAX_ROWS


def parse_time(name: str, text: str) -> Bound:
    """An ISO date (2026-11-30) or date-time (2026-11-30T08:00:00Z); a naive time is UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)  # year 1 at +01:00 overflows
    except (ValueError, OverflowError):
        raise InvalidRequestError(
            f"{name} must be an ISO date (2026-11-30) or date-time (2026-11-30T08:00:00Z).",
            param=name,
        ) from None
    return moment


def parse_query(
    params: Mapping[str, str], *, records: bool = False, own: bool = False
) -> UsageQuery:
    """Check query parameters; a wrong one is a 400 naming it. `records`: the raw records'
    parameters; `own`: a key reading its own usage (no `key` parameter)."""
    allowed = ["since", "until", "model", "format", "limit"]
    allowed += ["request_id"] if records else ["group_by"]
    allowed += [] if own else ["key"]
    for name in params:
        if name not in allowed:
            shown = name[:64]  # the caller's text, echoed back: bounded
            raise InvalidRequestError(
                f"Unknown query parameter {shown!r}; this endpoint accepts {', '.join(allowed)}.",
                param=shown,
            )
    group_by: tuple[str, ...] = DEFAULT_GROUPS
    if "group_by" in params:
        group_by = tuple(g.strip() for g in params["group_by"].split(",") if g.strip())
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown or len(set(group_by)) != len(group_by):
            raise InvalidRequestError(
                f"group_by takes a comma-separated list of {', '.join(GROUPS)}, each once.",
                param="group_by",
            )
    since = parse_time("since", params["since"]) if params.get("since") else None
    until = parse_time("until", params["until"]) if params.get("until") else None
    top = MAX_RECORDS if records else MAX_ROWS
    limit = DEFAULT_RECORDS if records else MAX_ROWS
    if "limit" in params:
        text = params["limit"].strip()
        if not text.isdigit() or not 1 <= int(text) <= top:
            raise InvalidRequestError(
                f"limit must be a whole number from 1 to {top}.", param="limit"
            )
        limit = int(text)
    return UsageQuery(
        group_by=group_by,
        since=since,
        until=until,
        key=params.get("key") or None,
        model=params.get("model") or None,
        request_id=params.get("request_id") or None,
        limit=limit,
    )


def _start(bound: Bound) -> datetime:
    return bound if isinstance(bound, datetime) else datetime.combine(bound, time())


def _end(bound: Bound) -> datetime:
    """The first moment after the bound: a date's next midnight, a time itself."""
    if isinstance(bound, datetime):
        return bound
    if bound == date.max:  # no next day to stop before
        return datetime.max
    return datetime.combine(bound + timedelta(days=1), time())


def _by_day(q: UsageQuery) -> bool:
    """Whether the daily roll-ups answer this query: no bound has a time of day."""
    return not isinstance(q.since, datetime) and not isinstance(q.until, datetime)


def summary(engine: Engine, q: UsageQuery) -> tuple[list[dict[str, Any]], bool, str]:
    """Usage summed by the query's groups: the rows, whether more were left off, the source."""
    if _by_day(q):
        source: Any = usage_daily
        where = []
        if q.since is not None:
            where.append(usage_daily.c.day >= q.since)
        if q.until is not None:
            where.append(usage_daily.c.day <= q.until)
        name = "daily"
    else:
        r = usage_records.c
        error = sa.or_(r.status >= 400, r.error_type.is_not(None))
        columns = [
            r.day,
            sa.func.coalesce(r.key_name, "").label("key_name"),
            sa.func.coalesce(r.model, "").label("model"),
            sa.func.coalesce(r.backend, "").label("backend"),
            r.endpoint,
            sa.literal(1).label("requests"),
            sa.case((error, 1), else_=0).label("errors"),
            sa.case((r.streamed, 1), else_=0).label("streamed"),
            sa.case((r.abandoned, 1), else_=0).label("abandoned"),
            sa.case((r.cache == "HIT", 1), else_=0).label("cache_hits"),
            r.prompt_tokens,
            r.completion_tokens,
            sa.func.coalesce(r.reasoning_tokens, 0).label("reasoning_tokens"),
            sa.func.coalesce(r.cached_tokens, 0).label("cached_tokens"),
            r.duration_ms,
        ]
        raw = sa.select(*columns)
        if q.since is not None:
            raw = raw.where(r.ts >= _start(q.since))
        if q.until is not None:
            raw = raw.where(r.ts < _end(q.until))
        source, where, name = raw.subquery(), [], "records"
    c = source.c
    if q.key is not None:
        where.append(c.key_name == q.key)
    if q.model is not None:
        where.append(c.model == q.model)
    groups = [c[GROUPS[g]].label(g) for g in q.group_by]
    sums = [sa.func.sum(c[s]).label(s) for s in DAILY_SUMS]
    stmt = sa.select(*groups, *sums).where(*where).having(sa.func.sum(c.requests) > 0)
    if groups:
        stmt = stmt.group_by(*groups).order_by(*groups)
    found = _fetch(engine, stmt.limit(q.limit + 1))
    return [_summary_row(q.group_by, row) for row in found[: q.limit]], len(found) > q.limit, name


def _summary_row(group_by: Sequence[str], row: RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in group_by:
        value = row[g]
        out[g] = value.isoformat() if isinstance(value, date) else (value or None)
    requests = int(row["requests"] or 0)
    for s in DAILY_SUMS[:-1]:
        out[s] = int(row[s] or 0)
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    duration = float(row["duration_ms"] or 0.0)
    out["mean_duration_ms"] = round(duration / requests, 1) if requests else None
    return out


def records(engine: Engine, q: UsageQuery) -> list[dict[str, Any]]:
    """Raw records, newest first."""
    r = usage_records.c
    stmt = sa.select(*(r[name] for name in COLUMNS))
    if q.since is not None:
        stmt = stmt.where(r.ts >= _start(q.since))
    if q.until is not None:
        stmt = stmt.where(r.ts < _end(q.until))
    if q.key is not None:
        stmt = stmt.where(r.key_name == q.key)
    if q.model is not None:
        stmt = stmt.where(r.model == q.model)
    if q.request_id is not None:
        stmt = stmt.where(r.request_id == q.request_id)
    stmt = stmt.order_by(r.id.desc()).limit(q.limit)
    found = _fetch(engine, stmt)
    return [_record_row(row) for row in found]


def _fetch(engine: Engine, stmt: sa.Select[Any]) -> Sequence[RowMapping]:
    """The statement's rows; a database that cannot be reached is a 503 that says so (never
    the driver's message, which names hosts)."""
    try:
        with engine.connect() as conn:
            return conn.execute(stmt).mappings().all()
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        raise UpstreamUnavailableError(
            "The usage ledger's database cannot be reached; try again shortly.",
            code="usage_database_unavailable",
            retry_after=5,
        ) from None


def _record_row(row: RowMapping) -> dict[str, Any]:
    out = dict(row)
    out["ts"] = row["ts"].replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    for name in ("tokens_estimated", "streamed", "abandoned"):
        out[name] = bool(row[name])
    return out


# A spreadsheet runs a cell that starts with one of these as a formula; model names and paths
# are the caller's text, so such cells are written with a leading quote (docs/threat-model.md).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def summary_columns(group_by: Sequence[str]) -> list[str]:
    return [*group_by, *DAILY_SUMS[:-1], "total_tokens", "mean_duration_ms"]


RECORD_COLUMNS = list(COLUMNS)
