"""The operator dashboard's numbers: one period's usage as totals, series over time per key and
per model, the top keys and models, and latency percentiles (docs/operations.md "Dashboard").

Every query is bounded and none reads the raw records but one. The last 24 hours and 7 days are
summed from the hourly roll-ups, 30 days from the daily ones: a few rows per key, model and hour
or day, however busy the gateway (docs/design.md §10.4). Sums come back as at most `TOP` names per
chart (the rest is one `other` series) times the period's buckets. Percentiles need the values,
so they are computed in Python over a bounded sample: the newest `SAMPLE` successful records of
the period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from services.core.errors import InvalidRequestError
from services.usage.schema import usage_daily, usage_hourly, usage_records

TOP = 8  # names per chart and per table; the rest is summed as "other"
SAMPLE = 5000  # records the latency percentiles are computed over
PERCENTILES = (50, 90, 99)
SUMS = (
    "requests",
    "errors",
    "cache_hits",
    "streamed",
    "abandoned",
    "prompt_tokens",
    "completion_tokens",
    "duration_ms",
)
DIMENSIONS = {"key": "key_name", "model": "model"}


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    bucket: str  # "hour" or "day"
    count: int  # buckets in the period, the current one last


PERIODS = {
    "24h": Period("24h", "hour", 24),
    "7d": Period("7d", "hour", 7 * 24),
    "30d": Period("30d", "day", 30),
}
DEFAULT_PERIOD = "24h"


def parse_period(params: Mapping[str, str]) -> Period:
    """The `period` parameter (24h, 7d or 30d); anything else is a 400 naming it."""
    for name in params:
        if name != "period":
            shown = name[:64]  # the caller's text, echoed back: bounded
            raise InvalidRequestError(
                f"Unknown query parameter {shown!r}; this endpoint accepts period.", param=shown
            )
    name = params.get("period", DEFAULT_PERIOD)
    if name not in PERIODS:
        raise InvalidRequestError(f"period must be one of {', '.join(PERIODS)}.", param="period")
    return PERIODS[name]


def buckets(period: Period, now: datetime) -> list[datetime]:
    """The starts of the period's buckets, oldest first; the last holds `now` (naive UTC)."""
    if period.bucket == "hour":
        last = now.replace(minute=0, second=0, microsecond=0)
        return [last - timedelta(hours=n) for n in range(period.count - 1, -1, -1)]
    today = datetime.combine(now.date(), time())
    return [today - timedelta(days=n) for n in range(period.count - 1, -1, -1)]


def _rows(period: Period, since: datetime) -> Any:
    """The roll-ups of the period: one row per bucket, key and model (and, for days, backend
    and endpoint), with their sums."""
    if period.bucket == "day":
        d = usage_daily.c
        daily = sa.select(d.day.label("bucket"), d.key_name, d.model, *(d[n] for n in SUMS))
        return daily.where(d.day >= since.date()).subquery()
    h = usage_hourly.c
    hourly = sa.select(h.hour.label("bucket"), h.key_name, h.model, *(h[n] for n in SUMS))
    return hourly.where(h.hour >= since).subquery()


def _bucket_start(value: Any) -> datetime:
    if isinstance(value, datetime):  # PostgreSQL's date_trunc
        return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, date):
        return datetime.combine(value, time())
    return datetime.fromisoformat(str(value))


def _sums(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(row[name] or 0) for name in SUMS[:-1]}
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    requests = out["requests"]
    duration = float(row["duration_ms"] or 0.0)
    out["mean_duration_ms"] = round(duration / requests, 1) if requests else None
    out["error_rate"] = round(out["errors"] / requests, 4) if requests else None
    out["cache_hit_rate"] = round(out["cache_hits"] / requests, 4) if requests else None
    return out


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def summary(engine: Engine, period: Period, now: datetime) -> dict[str, Any]:
    """The period's numbers, as the dashboard's data endpoint returns them."""
    starts = buckets(period, now)
    since = starts[0]
    rows = _rows(period, since)
    with engine.connect() as conn:
        sums = [sa.func.sum(rows.c[name]).label(name) for name in SUMS]
        per_bucket = conn.execute(sa.select(rows.c.bucket, *sums).group_by(rows.c.bucket))
        bucket_totals = {_bucket_start(r["bucket"]): r for r in per_bucket.mappings()}
        top: dict[str, list[dict[str, Any]]] = {}
        series: dict[str, dict[str, Any]] = {}
        for dimension, column in DIMENSIONS.items():
            name = rows.c[column]
            ranked = conn.execute(
                sa.select(name.label("name"), *sums)
                .group_by(name)
                .order_by(sa.func.sum(rows.c.requests).desc(), name)
                .limit(TOP)
            ).mappings()
            top[dimension] = [{"name": r["name"] or None, **_sums(r)} for r in ranked]
            names = [t["name"] or "" for t in top[dimension]]
            found = conn.execute(
                sa.select(rows.c.bucket, name.label("name"), *sums)
                .where(name.in_(names))
                .group_by(rows.c.bucket, name)
                .limit(TOP * len(starts))
            ).mappings()
            series[dimension] = _series(starts, names, list(found), bucket_totals)
    total: dict[str, Any] = dict.fromkeys(SUMS, 0)
    for row in bucket_totals.values():
        for name in SUMS:
            total[name] += row[name] or 0
    latency = percentiles(engine, since)
    return {
        "period": period.name,
        "bucket": period.bucket,
        "since": _iso(since),
        "until": _iso(now),
        "source": "daily" if period.bucket == "day" else "hourly",
        "buckets": [_iso(start) for start in starts],
        "totals": _sums(total),
        "top": top,
        "series": series,
        "latency": latency,
    }


METRICS = {
    "requests": ("requests",),
    "tokens": ("prompt_tokens", "completion_tokens"),
    "errors": ("errors",),
}


def _series(
    starts: Sequence[datetime],
    names: Sequence[str],
    found: Sequence[RowMapping],
    bucket_totals: Mapping[datetime, RowMapping],
) -> dict[str, Any]:
    """Per metric, one list of per-bucket values per name, then "other": the rest of the total."""
    place = {start: i for i, start in enumerate(starts)}
    slot = {name: i for i, name in enumerate(names)}
    out: dict[str, Any] = {"names": [n or None for n in names]}
    for metric, columns in METRICS.items():
        values = [[0] * len(starts) for _ in range(len(names) + 1)]
        for row in found:
            i = place.get(_bucket_start(row["bucket"]))
            if i is not None:
                values[slot[row["name"] or ""]][i] = sum(int(row[c] or 0) for c in columns)
        for start, i in place.items():
            sums = bucket_totals.get(start)
            total = sum(int(sums[c] or 0) for c in columns) if sums is not None else 0
            values[-1][i] = total - sum(v[i] for v in values[:-1])
        out[metric] = values
    out["other"] = any(out["requests"][-1])  # requests by names beyond the top ones
    return out


def percentiles(engine: Engine, since: datetime) -> dict[str, Any]:
    """p50, p90 and p99 of the duration and the time to the first token, overall and per model,
    over the newest `SAMPLE` successful records since `since` (nearest rank)."""
    r = usage_records.c
    stmt = (
        sa.select(r.model, r.duration_ms, r.first_token_ms)
        .where(r.ts >= since, r.status < 400, r.error_type.is_(None))
        .order_by(r.id.desc())
        .limit(SAMPLE)
    )
    with engine.connect() as conn:
        sample = conn.execute(stmt).all()
    by_model: dict[str, list[tuple[float, float | None]]] = {}
    for model, duration, first in sample:
        by_model.setdefault(model or "", []).append((duration, first))
    ranked = sorted(by_model.items(), key=lambda item: (-len(item[1]), item[0]))[:TOP]
    return {
        "sample": len(sample),
        "sample_limit": SAMPLE,
        **_latency([(d, f) for _, d, f in sample]),
        "by_model": [{"model": m or None, **_latency(values)} for m, values in ranked],
    }


def _latency(values: Sequence[tuple[float, float | None]]) -> dict[str, Any]:
    durations = sorted(d for d, _ in values)
    firsts = sorted(f for _, f in values if f is not None)
    return {
        "count": len(values),
        "duration_ms": _ranks(durations),
        "first_token_ms": _ranks(firsts),
    }


def _ranks(ordered: Sequence[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        if not ordered:
            out[f"p{p}"] = None
            continue
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}"] = round(float(ordered[rank - 1]), 1)
    return out
