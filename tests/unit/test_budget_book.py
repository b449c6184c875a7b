"""One worker's budget book against a real SQLite ledger: what it counts of itself as a request
goes from admitted to queued to written, so that it never admits past a budget on its own count,
and a read of the database replaces exactly what it already holds (docs/design.md §10.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.usage.budgets import BudgetBook, BudgetExceededError, BudgetUnavailableError
from services.usage.record import UsageRecord
from services.usage.store import UsageStore
from settings.budgets import Budgets, BudgetSettings
from tests.usage.records import a_record


class Refusals:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def labels(self, *values: str) -> Refusals:
        self.seen.append(values)
        return self

    def inc(self, amount: float = 1) -> None:
        pass


def record(request_id: str, backend: str | None = "ollama", tokens: int = 0) -> UsageRecord:
    return a_record(request_id=request_id, backend=backend, prompt_tokens=tokens)


@pytest.fixture
def store(tmp_path: Path) -> UsageStore:
    store = UsageStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    store.migrate()
    return store


def book_for(store: UsageStore, cache_seconds: float = 3600.0) -> BudgetBook:
    # A long cache: the book decides on its first read and its own count alone.
    return BudgetBook(store.engine, BudgetSettings(cache_seconds=cache_seconds), Refusals())


def spent(book: BudgetBook, budgets: Budgets, name: str) -> int:
    return int(book.status("team", budgets)[name]["spent"])


def test_a_worker_counts_its_requests_from_admission_to_the_database(store: UsageStore) -> None:
    budgets = Budgets(requests_per_day=2)
    book = book_for(store)
    book.admit("team", budgets, "r1")
    book.admit("team", budgets, "r2")
    with pytest.raises(BudgetExceededError):  # two running: the third is refused at once
        book.admit("team", budgets, "r3")

    one, two = record("r1"), record("r2", backend=None)  # r2 failed before any backend
    book.queued(one)
    with pytest.raises(BudgetExceededError):  # r1 queued, r2 still running
        book.admit("team", budgets, "r3")
    book.queued(two)  # a request no backend took spends nothing: one place is free again
    book.admit("team", budgets, "r3")
    with pytest.raises(BudgetExceededError):
        book.admit("team", budgets, "r4")

    store.write([one, two])
    book.written([one, two])
    # Written after the last read began: still counted by the book, once.
    with pytest.raises(BudgetExceededError):
        book.admit("team", budgets, "r4")
    # A read now holds r1; r3 runs: 2, not 3 (r1 is not counted twice).
    assert spent(book, budgets, "requests_per_day") == 2


def test_dropped_records_are_not_spent_and_tokens_count_when_written(store: UsageStore) -> None:
    budgets = Budgets(tokens_per_day=25, requests_per_month=10)
    book = book_for(store)
    for i in range(3):
        book.admit("team", budgets, f"t{i}")
        book.queued(record(f"t{i}", tokens=10))
    with pytest.raises(BudgetExceededError) as refused:
        book.admit("team", budgets, "t3")
    assert "used 30 of its 25 tokens per day" in refused.value.message
    lost = record("t2", tokens=10)
    book.dropped([lost])  # the writer could not keep it: it never happened, for the ledger
    book.admit("team", budgets, "t3")
    book.queued(record("t3", tokens=0))
    assert spent(book, budgets, "tokens_per_day") == 20
    assert spent(book, budgets, "requests_per_month") == 3


def test_unreadable_budgets_fail_closed_or_open_on_what_is_known(
    store: UsageStore, tmp_path: Path
) -> None:
    budgets = Budgets(requests_per_day=1)
    store.write([record("old")])  # the budget is already spent in the database
    for fail_open in (False, True):
        settings = BudgetSettings(cache_seconds=0.0, fail_open=fail_open)
        book = BudgetBook(store.engine, settings, Refusals())
        with pytest.raises(BudgetExceededError):
            book.admit("team", budgets, "a")  # read: spent
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE usage_daily RENAME TO usage_daily_away")
        try:
            if fail_open:
                # What it read stays known: still refused, not let through.
                with pytest.raises(BudgetExceededError):
                    book.admit("team", budgets, "b")
                fresh = BudgetBook(store.engine, settings, Refusals())
                fresh.admit("team", budgets, "c")  # never read: admitted
            else:
                with pytest.raises(BudgetUnavailableError):
                    book.admit("team", budgets, "b")
            with pytest.raises(BudgetUnavailableError):  # showing reads now, whatever the setting
                book.status("team", budgets)
        finally:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE usage_daily_away RENAME TO usage_daily")
