"""The per-worker writer: records wait on a bounded queue and a background thread writes them in
batches, so no reply waits for the database (docs/design.md §10.1).

Under gunicorn's gevent worker the thread is a greenlet (the worker patches `threading`). A full
queue drops the record, counts it and logs once; the worker's exit writes what is queued. While
the database is unreachable the writer keeps the batch it could not write and retries, so records
wait (bounded by the queue) until it is back, with one log line when it goes and one when it
returns.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from loguru import logger

from services.usage.record import UsageRecord
from services.usage.store import UsageStore, mask
from settings.usage import UsageSettings

BATCH = 200  # records per transaction: about 10 ms of a worker's time (docs/design.md §10.1)
PRUNE_EVERY = 3600.0  # seconds between two prunes by one worker
RETRY_SECONDS = 1.0  # while the database is unreachable, the writer tries again this often


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Counters(Protocol):
    def labels(self, *values: str) -> Count: ...


class Watcher(Protocol):
    """Told what becomes of records (the budgets count what is not written yet)."""

    def queued(self, record: UsageRecord) -> None: ...
    def written(self, records: list[UsageRecord]) -> None: ...
    def dropped(self, records: list[UsageRecord]) -> None: ...


class Ledger:
    """Takes records without waiting; writes them in the background."""

    def __init__(
        self,
        store: UsageStore,
        *,
        queue_size: int,
        flush_seconds: float,
        retention_days: int,
        daily_retention_days: int,
        dropped: Counters,
        written: Count,
    ) -> None:
        self.store = store
        self._queue: queue.Queue[UsageRecord] = queue.Queue(queue_size)
        self._flush_seconds = flush_seconds
        self._retention = (retention_days, daily_retention_days)
        self._dropped, self._written = dropped, written
        self._stop = threading.Event()
        self._writing = threading.Lock()  # one batch at a time: the thread or the exit flush
        self._starting = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dropping = False  # dropped since the last write: logged once
        self._next_prune = 0.0
        self._held: list[UsageRecord] = []  # a batch the database could not take, tried again
        self._down_since: float | None = None  # the database has been unreachable since then
        self.watcher: Watcher | None = None  # the budgets (services/usage/budgets.py)

    def submit(self, record: UsageRecord) -> None:
        """Queue a record; when the queue is full, drop it (counted), never wait."""
        if self._thread is None:
            self._start()
        if self.watcher is not None:
            self.watcher.queued(record)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if self.watcher is not None:
                self.watcher.dropped([record])
            self._dropped.labels("queue_full").inc()
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "usage ledger queue is full ({} records): dropping records until it drains"
                    " (relay_usage_dropped counts them)",
                    self._queue.maxsize,
                )

    def _start(self) -> None:
        # The thread starts with the first record, in the process that serves: never in a
        # gunicorn master, a CLI command or a test app that records nothing.
        with self._starting:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="relay-usage-writer", daemon=True)
            thread.start()
            self._thread = thread
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self._pause()):
            self.flush()

    def _pause(self) -> float:
        if self._down_since is None:
            return self._flush_seconds
        return max(self._flush_seconds, RETRY_SECONDS)

    @property
    def down(self) -> bool:
        """Whether the last write found the database unreachable."""
        return self._down_since is not None

    def flush(self) -> int:
        """Write everything queued now; return how many records were written."""
        written = 0
        with self._writing:
            while True:
                batch = self._held or self._take(BATCH)
                if not batch:
                    break
                try:
                    self.store.write(batch)
                except Exception as e:
                    if _unreachable(e):  # kept, and tried again: the queue bounds what waits
                        self._held = batch
                        self._went_down(e)
                        break
                    # The database refused these records: they are lost, and counted.
                    self._held = []
                    if self.watcher is not None:
                        self.watcher.dropped(batch)
                    self._dropped.labels("write_failed").inc(len(batch))
                    logger.error(
                        "usage ledger could not write {} records: {}", len(batch), self._why(e)
                    )
                    break
                self._held = []
                self._came_back()
                if self.watcher is not None:
                    self.watcher.written(batch)
                written += len(batch)
                self._written.inc(len(batch))
                self._dropping = False
                time.sleep(0)  # let the worker's requests run between batches (a greenlet)
            if self._down_since is None:
                self._prune()
        return written

    def _went_down(self, error: Exception) -> None:
        if self._down_since is not None:
            return  # one line per outage, not one per attempt
        self._down_since = time.monotonic()
        logger.error(
            "usage ledger cannot reach its database ({}): keeping records queued (up to {}) and"
            " trying again every {:g} s",
            self._why(error),
            self._queue.maxsize + BATCH,
            self._pause(),
        )

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        seconds = time.monotonic() - self._down_since
        self._down_since = None
        logger.warning(
            "usage ledger database is back after {:.1f} s: writing the queued records", seconds
        )

    def _why(self, error: Exception) -> str:
        return self.store.mask(_why(error))

    def _take(self, most: int) -> list[UsageRecord]:
        batch: list[UsageRecord] = []
        while len(batch) < most:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        raw, daily = self._retention
        try:
            deleted = self.store.prune(datetime.now(UTC).replace(tzinfo=None), raw, daily)
        except Exception as e:
            logger.error("usage ledger could not prune old records: {}", self._why(e))
            return
        if deleted:
            logger.info("usage ledger pruned {} records older than {} days", deleted, raw)

    def close(self) -> None:
        """Stop the writer and write what is still queued (the worker is exiting)."""
        self._stop.set()
        count = self.flush()
        if count:
            logger.info("usage ledger wrote {} queued records at exit", count)
        lost, self._held = self._held + self._take(self._queue.maxsize), []
        if lost:  # the database is still away: what waited for it is lost, and counted
            if self.watcher is not None:
                self.watcher.dropped(lost)
            self._dropped.labels("write_failed").inc(len(lost))
            logger.error(
                "usage ledger could not write {} queued records at exit: its database is"
                " unreachable",
                len(lost),
            )


def _why(error: Exception) -> str:
    # The driver's own error, without the statement and its values that SQLAlchemy adds.
    cause = getattr(error, "orig", None) or error
    text = " ".join(str(cause).split())  # psycopg's messages span lines
    return f"{type(cause).__name__}: {text}"[:300]


def _unreachable(error: Exception) -> bool:
    """Whether a failed write may succeed later unchanged: the database is down, restarting,
    unreachable, locked or out of connections, rather than refusing these rows."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


def build_ledger(settings: UsageSettings, dropped: Counters, written: Count) -> Ledger | None:
    """The worker's ledger, its schema brought up to date; None when RELAY_USAGE is off."""
    if not settings.enabled:
        return None
    try:
        store = UsageStore.open(settings.database_url, settings.pool_size)
        applied = store.migrate()
    except Exception as e:  # a worker that cannot keep usage does not start: say why, once
        why = mask(_why(e), settings.database_url)
        raise RuntimeError(
            f"usage ledger: cannot open its database ({why}); set RELAY_DATABASE_URL to a"
            " writable place, or RELAY_USAGE=off"
        ) from None
    if applied:
        logger.info("usage ledger schema migrated to version {}", applied[-1])
    return Ledger(
        store,
        queue_size=settings.queue_size,
        flush_seconds=settings.flush_seconds,
        retention_days=settings.retention_days,
        daily_retention_days=settings.daily_retention_days,
        dropped=dropped,
        written=written,
    )
