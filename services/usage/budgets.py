"""Budgets: the tokens and requests a key may spend per UTC day and month (docs/access.md
"Budgets", docs/design.md §10.5).

The ledger's database is the truth: what a key spent is the sum of its daily roll-ups for the
day and the month. Each worker reuses what it read for RELAY_BUDGET_CACHE_SECONDS and adds what
it counted itself since: the requests it admitted that have not finished, the records queued
for the writer, and the records written after its last read began. A worker therefore never
overshoots on its own (requests); what it cannot see is what other workers and gateways admitted
since its last read, and the tokens of requests still running. A request is admitted on what is
known before it runs; its tokens count when it finishes.

A request counts against a requests budget when a backend took it (its record names one); its
tokens are its prompt and completion tokens.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.engine import Engine

from services.core.errors import GatewayError
from services.usage.record import UsageRecord
from services.usage.schema import usage_daily
from settings.budgets import Budgets, BudgetSettings

FAILED_RETRY_SECONDS = 1.0  # after a failed read, the next one waits at least this long
MAX_WRITTEN = 1000  # written batches kept for a key nobody reads; past it, it is read again

# How each budget reads in a message.
WORDS = {
    "tokens_per_day": "tokens per day",
    "tokens_per_month": "tokens per month",
    "requests_per_day": "requests per day",
    "requests_per_month": "requests per month",
}


class BudgetExceededError(GatewayError):
    """429 insufficient_quota: a budget of the key is spent until it resets. Clients are told not
    to retry (`x-should-retry: false`): nothing changes before the reset."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class BudgetUnavailableError(GatewayError):
    """503: the ledger's database cannot be read and budgets fail closed."""

    status = 503
    type = "service_unavailable_error"
    code = "budget_unavailable"


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Counters(Protocol):
    def labels(self, *values: str) -> Count: ...


@dataclass(slots=True)
class Amount:
    requests: int = 0
    tokens: int = 0

    def add(self, other: Amount, sign: int = 1) -> None:
        self.requests = max(0, self.requests + sign * other.requests)
        self.tokens = max(0, self.tokens + sign * other.tokens)


@dataclass(frozen=True, slots=True)
class Spent:
    """What a key spent in the current day and month."""

    day: Amount
    month: Amount


@dataclass(slots=True)
class _Read:
    seq: int  # written batches up to this number were in the database when the read began
    day: date  # the UTC day it was read for
    spent: Spent
    at: float  # time.monotonic() of the read


@dataclass(slots=True)
class _KeyState:
    held: dict[date, int] = field(default_factory=lambda: defaultdict(int))  # admitted, running
    queued: dict[date, Amount] = field(default_factory=lambda: defaultdict(Amount))
    written: list[tuple[int, date, Amount]] = field(default_factory=list)  # since a read began
    read: _Read | None = None
    reading: bool = False
    failed_until: float = 0.0


def resets(today: date) -> tuple[datetime, datetime]:
    """When the day's and the month's budgets start again (UTC midnights)."""
    day = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return day, datetime(year, month, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def contribution(record: UsageRecord) -> Amount:
    """What a finished request spends: one request when a backend took it, and its tokens."""
    return Amount(1 if record.backend else 0, record.prompt_tokens + record.completion_tokens)


def read_spent(engine: Engine, keys: Sequence[str] | None, today: date) -> dict[str, Spent]:
    """The keys' spending this UTC day and month, from the daily roll-ups (None: every key)."""
    d = usage_daily.c
    took = d.backend != ""
    tokens = d.prompt_tokens + d.completion_tokens
    stmt = (
        sa.select(
            d.key_name,
            sa.func.sum(sa.case((sa.and_(d.day == today, took), d.requests), else_=0)),
            sa.func.sum(sa.case((d.day == today, tokens), else_=0)),
            sa.func.sum(sa.case((took, d.requests), else_=0)),
            sa.func.sum(tokens),
        )
        .where(d.day >= today.replace(day=1), d.day <= today)
        .group_by(d.key_name)
    )
    if keys is not None:
        stmt = stmt.where(d.key_name.in_(list(keys)))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {
        str(name): Spent(Amount(int(a or 0), int(b or 0)), Amount(int(c or 0), int(e or 0)))
        for name, a, b, c, e in rows
    }


class BudgetBook:
    """One worker's view of every budgeted key's spending: read from the ledger, cached for a
    few seconds, plus what this worker counted itself since."""

    def __init__(
        self,
        engine: Engine,
        settings: BudgetSettings,
        refused: Counters,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._refused = refused
        self._now = now
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._tickets: dict[tuple[str, str], list[date]] = {}  # admitted requests by id
        self._seq = 0  # written batches so far
        self._down = False  # the database could not be read: logged once until it can

    # --- admitting --------------------------------------------------------------------------

    def admit(self, key: str, budgets: Budgets, request_id: str) -> None:
        """Let a request of `key` through, or raise BudgetExceededError (429) when one of its
        budgets is spent, or BudgetUnavailableError (503) when budgets cannot be read and fail
        closed. An admitted request counts until its record is written."""
        if not budgets.any:
            return
        now = self._now()
        today = now.date()
        spent = self._spent(key, today, force=False, fail_open=self.settings.fail_open)
        over = [
            (reset, name, limit, used)
            for name, limit in budgets.items()
            for reset, used in [self._period(name, spent, today)]
            if used >= limit
        ]
        if over:
            reset, name, limit, used = max(over)  # the one that holds the longest
            self._refused.labels(key, name).inc()
            raise BudgetExceededError(
                f"You exceeded your current quota: the API key '{key}' has used {used} of its "
                f"{limit} {WORDS[name]} (budget_{name}). The budget resets at {iso(reset)}.",
                retry_after=max(1, math.ceil((reset - now).total_seconds())),
            )
        with self._lock:
            state = self._state(key)
            state.held[today] += 1
            self._tickets.setdefault((key, request_id), []).append(today)

    @staticmethod
    def _period(name: str, spent: Spent, today: date) -> tuple[datetime, int]:
        day_reset, month_reset = resets(today)
        amount, reset = (
            (spent.day, day_reset) if name.endswith("day") else (spent.month, month_reset)
        )
        return reset, amount.tokens if name.startswith("tokens") else amount.requests

    # --- what this worker counted (called by the ledger) -------------------------------------

    def queued(self, record: UsageRecord) -> None:
        """A request finished and its record waits for the writer."""
        key = record.key_name
        if key is None:
            return
        with self._lock:
            state = self._keys.get(key)
            days = self._tickets.get((key, record.request_id))
            if days:
                day = days.pop()
                if not days:
                    del self._tickets[(key, record.request_id)]
                if state is not None:
                    state.held[day] = max(0, state.held[day] - 1)
            if state is not None:
                state.queued[record.ts.date()].add(contribution(record))

    def written(self, records: Iterable[UsageRecord]) -> None:
        """A batch was committed: its records move from queued to written-since-the-read."""
        with self._lock:
            self._seq += 1
            for record in records:
                state = self._keys.get(record.key_name or "")
                if state is None:
                    continue
                amount, day = contribution(record), record.ts.date()
                state.queued[day].add(amount, -1)
                state.written.append((self._seq, day, amount))
                if len(state.written) > MAX_WRITTEN:
                    # Nobody read this key for a long while: all of it is in the database, and
                    # the next admission reads it afresh.
                    state.written.clear()
                    state.read = None

    def dropped(self, records: Iterable[UsageRecord]) -> None:
        """Records that will never be written (a full queue, a failed batch): not spent."""
        with self._lock:
            for record in records:
                state = self._keys.get(record.key_name or "")
                if state is not None:
                    state.queued[record.ts.date()].add(contribution(record), -1)

    # --- reading ----------------------------------------------------------------------------

    def _state(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        return state

    def _spent(self, key: str, today: date, *, force: bool, fail_open: bool) -> Spent:
        """What `key` spent today and this month as this worker knows it: the last read of the
        ledger (fresh enough, or read now) plus what it counted itself since. When the read
        fails: fail closed raises; fail open goes on with the last read (or none)."""
        with self._lock:
            state = self._state(key)
            read = state.read
        clock = time.monotonic()
        current = read is not None and read.day == today
        fresh = current and read is not None and clock - read.at < self.settings.cache_seconds
        if force or not fresh:
            # One greenlet refreshes a key that has today's read; the others use that meanwhile.
            busy = state.reading and current and not force
            if not busy:
                ok = (force or clock >= state.failed_until) and self._read(key, state, today)
                if not ok and not fail_open:
                    raise _unavailable()
        with self._lock:
            read = state.read
            zero = Spent(Amount(), Amount())
            base = read.spent if read is not None and read.day == today else zero
            return self._with_local(state, base, today)

    def _read(self, key: str, state: _KeyState, today: date) -> bool:
        with self._lock:
            seq = self._seq
            state.reading = True
        try:
            found = read_spent(self.engine, [key], today)
        except Exception as e:  # the database cannot be read: fail open or closed
            with self._lock:
                state.reading = False
                wait = max(self.settings.cache_seconds, FAILED_RETRY_SECONDS)
                state.failed_until = time.monotonic() + wait
            self._outage(e)
            return False
        spent = found.get(key, Spent(Amount(), Amount()))
        with self._lock:
            state.reading = False
            state.failed_until = 0.0
            if state.read is None or state.read.day != today or seq >= state.read.seq:
                state.read = _Read(seq, today, spent, time.monotonic())
                state.written = [w for w in state.written if w[0] > seq]
        if self._down:
            self._down = False
            logger.info("budgets: the usage database can be read again")
        return True

    def _outage(self, error: Exception) -> None:
        if self._down:
            return
        self._down = True
        cause = getattr(error, "orig", None) or error
        what = "admitting requests" if self.settings.fail_open else "refusing budgeted keys (503)"
        logger.error(
            "budgets: cannot read the usage database ({}); {} until it can be read",
            f"{type(cause).__name__}: {cause}"[:300],
            what,
        )

    @staticmethod
    def _with_local(state: _KeyState, base: Spent, today: date) -> Spent:
        day = Amount(base.day.requests, base.day.tokens)
        month = Amount(base.month.requests, base.month.tokens)
        month_start = today.replace(day=1)

        def count(when: date, amount: Amount) -> None:
            if when == today:
                day.add(amount)
            if month_start <= when <= today:
                month.add(amount)

        for when, n in list(state.held.items()):
            count(when, Amount(n, 0))
        for when, amount in list(state.queued.items()):
            count(when, amount)
        for _seq, when, amount in state.written:
            count(when, amount)
        for when in [w for w in state.held if w < month_start]:
            del state.held[when]
        for when in [w for w in state.queued if w < month_start]:
            del state.queued[when]
        return Spent(day, month)

    # --- showing ----------------------------------------------------------------------------

    def status(self, key: str, budgets: Budgets) -> dict[str, Any]:
        """A key's budgets, what it spent and has left, and when each resets; read now."""
        items = budgets.items()
        if not items:
            return {}
        now = self._now()
        today = now.date()
        spent = self._spent(key, today, force=True, fail_open=False)
        out: dict[str, Any] = {}
        for name, limit in items:
            reset, used = self._period(name, spent, today)
            out[name] = {
                "limit": limit,
                "spent": used,
                "remaining": max(0, limit - used),
                "resets_at": iso(reset),
            }
        return out


def _unavailable() -> BudgetUnavailableError:
    return BudgetUnavailableError(
        "Budgets cannot be checked right now (the usage database cannot be read); try again "
        "shortly.",
        retry_after=int(FAILED_RETRY_SECONDS) + 1,
    )
