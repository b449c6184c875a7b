"""One thread that runs every short-lived deadline of the process (docs/design.md §12).

A `threading.Timer` per request costs a thread start and its cancel — a greenlet spawn, a
condition and a switch under gevent, about 50 µs — and almost every such deadline is cancelled
long before it fires (a request body that arrived at once). Here a deadline is one heap entry:
scheduling costs a push, cancelling sets a flag, and the thread wakes at most every `tick`
seconds to drop cancelled entries and run those that are due, so a deadline fires up to `tick`
late, never early.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from loguru import logger


class Deadline:
    """A scheduled action; `cancel()` keeps it from running."""

    __slots__ = ("action", "cancelled", "when")

    def __init__(self, when: float, action: Callable[[], None]) -> None:
        self.when, self.action, self.cancelled = when, action, False

    def cancel(self) -> None:
        self.cancelled = True


class SharedTimers:
    """Deadlines run by one daemon thread, started on first use (so after a fork)."""

    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties keep scheduling order; Deadlines never compare
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def call_later(self, seconds: float, action: Callable[[], None]) -> Deadline:
        deadline = Deadline(time.monotonic() + seconds, action)
        with self._lock:
            earliest = not self._heap or deadline.when < self._heap[0][0]
            heapq.heappush(self._heap, (deadline.when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relay-timers", daemon=True)
                self._thread.start()
        if earliest:
            self._wake.set()  # the thread may be asleep until a later deadline, or idle
        return deadline

    def pending(self) -> int:
        """Deadlines scheduled and not yet run or dropped (cancelled ones until their turn)."""
        with self._lock:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._lock:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                self._wake.clear()
            if wait is None or wait > 0:
                self._wake.wait(wait)
                continue
            for action in self._take_due():
                try:
                    action()
                except Exception:  # one failing action must not stop the others
                    logger.exception("a scheduled action failed")
            time.sleep(self.tick)  # batch the next ones: at most one wake-up per tick

    def _take_due(self) -> list[Callable[[], None]]:
        now = time.monotonic()
        due: list[Callable[[], None]] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, deadline = heapq.heappop(self._heap)
                if not deadline.cancelled:
                    due.append(deadline.action)
        return due
