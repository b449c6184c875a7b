"""Backpressure for GPU backends: a limit of requests in flight, a bounded queue that is fair
between keys, and a deadline. Over it, callers get a clear 429 or 503 with Retry-After instead
of piling onto a server that answers overload by reloading models or queueing for minutes.

Fairness: waiting requests are kept per key and a freed slot goes to the keys in turn (round
robin), so one key's burst waits behind its own requests, not in front of everyone else's.
Uses threading primitives, which gevent patches under gunicorn (each request is a greenlet).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from services.core.errors import RateLimitError, UpstreamUnavailableError


class BackendBusyError(RateLimitError):
    code = "backend_busy"
    type = "requests"


class BackendQueueTimeoutError(UpstreamUnavailableError):
    code = "backend_queue_timeout"


class Gate:
    """At most `limit` requests in flight; up to `queue` more wait, at most `wait` seconds."""

    def __init__(
        self,
        title: str,
        limit: int,
        queue: int,
        wait: float,
        on_change: Callable[[int, int], None] = lambda in_flight, queued: None,
    ) -> None:
        self.title, self.limit, self.queue_max, self.wait = title, limit, queue, wait
        self.on_change = on_change  # reports (in flight, queued) to metrics
        self.in_flight = 0
        self.waiting: OrderedDict[str, deque[threading.Event]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one in-flight slot for the body of the `with`."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release()

    def acquire(self, key: str) -> None:
        with self._lock:
            if self.in_flight < self.limit and not self.waiting:
                self.in_flight += 1
                self.on_change(self.in_flight, self.queued)
                return
            if self.queued >= self.queue_max:
                raise BackendBusyError(
                    f"{self.title} is at capacity ({self.limit} in flight, {self.queue_max} "
                    "waiting); try again shortly.",
                    retry_after=self._retry_after(),
                )
            turn = threading.Event()
            self.waiting.setdefault(key, deque()).append(turn)
            self.on_change(self.in_flight, self.queued)
        if turn.wait(self.wait):
            return  # release() handed us its slot
        with self._lock:
            if turn.is_set():  # handed over just as the deadline passed: keep it
                return
            self._forget(key, turn)
            self.on_change(self.in_flight, self.queued)
        raise BackendQueueTimeoutError(
            f"{self.title} did not free a slot within {self.wait:g} s; try again shortly.",
            retry_after=self._retry_after(),
        )

    def release(self) -> None:
        with self._lock:
            while self.waiting:
                key, turns = next(iter(self.waiting.items()))
                turn = turns.popleft()
                # Round robin: this key goes to the back of the line of keys.
                del self.waiting[key]
                if turns:
                    self.waiting[key] = turns
                turn.set()  # the slot passes straight to the waiter: in_flight is unchanged
                self.on_change(self.in_flight, self.queued)
                return
            self.in_flight -= 1
            self.on_change(self.in_flight, self.queued)

    def _forget(self, key: str, turn: threading.Event) -> None:
        turns = self.waiting.get(key)
        if turns is not None and turn in turns:
            turns.remove(turn)
            if not turns:
                del self.waiting[key]

    def _retry_after(self) -> int:
        return max(1, min(60, int(self.wait)))


class Gates:
    """One gate per backend that has a limit of requests in flight."""

    def __init__(self, gates: dict[str, Gate]) -> None:
        self.gates = gates

    def slot(self, backend: str, key: str) -> AbstractContextManager[None]:
        gate = self.gates.get(backend)
        return gate.slot(key) if gate else nullcontext()

    def report(self, backend: str) -> dict[str, int]:
        gate = self.gates.get(backend)
        if gate is None:
            return {}
        return {"in_flight": gate.in_flight, "queued": gate.queued, "max_in_flight": gate.limit}
