"""Routes: the ordered targets (an upstream model on a backend) one request may try, how they
are ordered (priority tiers, weights, requests in flight), the circuit breaker that skips a
failing target, and which failures may move a request on to the next target
(docs/routing.md, docs/design.md §11).

State is per worker process, like the hosts inside a backend (services/backends/hosts.py):
each gunicorn worker balances and opens circuits on what it saw itself.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from services.backends.base import Backend
from services.core.backpressure import BackendBusyError, BackendQueueTimeoutError
from services.core.errors import (
    GatewayError,
    ModelNotFoundError,
    RateLimitError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from services.core.types import ChatRequest, EmbeddingRequest, ImageRequest, TextRequest

R = TypeVar("R", ChatRequest, EmbeddingRequest, TextRequest, ImageRequest)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
MAX_BACKOFF_FACTOR = 10  # an open circuit's back-off doubles up to this many times the first


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream model on a backend, as one route names it."""

    backend: Backend
    model: str
    weight: int = 1
    priority: int = 1
    configured: bool = False  # from the routing table: balanced and watched by the breaker

    @property
    def name(self) -> str:
        """`backend/model`, as X-Relay-Route and the access log show it."""
        return f"{self.backend.name}/{self.model}"

    def fit(self, req: R) -> R:
        """The request with its model replaced by this target's upstream name."""
        return req if req.model == self.model else dataclasses.replace(req, model=self.model)


@dataclass(frozen=True, slots=True)
class Route:
    """What one requested name resolved to: targets in the order this request tries them."""

    requested: str
    targets: tuple[Target, ...]
    # The group's first configured target: the reply cache keys on it, so a balanced group
    # shares its cached replies whichever target answered.
    keyed: Target

    @property
    def primary(self) -> Target:
        return self.targets[0]

    @property
    def is_group(self) -> bool:
        return len(self.targets) > 1


def plain(backend: Backend, model: str) -> Route:
    """A route that is just the backend the name's globs matched."""
    target = Target(backend, model)
    return Route(model, (target,), target)


# --- which failures move on to the next target ---------------------------------------------


def fallback_reason(error: GatewayError) -> str | None:
    """Why a failure of one target may be tried on the next; None when it may not (the
    request itself is at fault, so every target would refuse it)."""
    if isinstance(error, BackendBusyError):
        return "queue_full"  # Relay's own backpressure queue for that backend
    if isinstance(error, BackendQueueTimeoutError):
        return "queue_timeout"
    if isinstance(error, RateLimitError):
        return "busy"  # the upstream's 429
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, UpstreamUnavailableError):
        return "unavailable"  # unreachable, or its 503
    if isinstance(error, ModelNotFoundError):
        return "model_missing"  # the target's backend does not have the model
    if isinstance(error, UnsupportedError):
        return "unsupported"  # that backend cannot do this (e.g. embeddings on Dify)
    if 400 <= error.status < 500:  # the request was refused: only a context window may pass
        text = error.message.lower()
        if error.code == "context_length_exceeded" or "context length" in text:
            return "context_window"  # a later target may have a larger one
        return None
    if isinstance(error, UpstreamError):
        return "upstream_error"  # its 5xx, a reply that is not its protocol
    return None


# Failures that say the target is unhealthy (they count towards opening its circuit); being
# busy, lacking the model or a context window say nothing about its health.
UNHEALTHY = frozenset({"timeout", "unavailable", "upstream_error"})


# --- health: in flight, circuit breaker, weighted choice -------------------------------------


@dataclass(slots=True)
class _State:
    in_flight: int = 0
    failures: int = 0  # consecutive
    opened: int = 0  # how many times in a row the circuit opened (for the back-off)
    open_until: float = 0.0
    probing: bool = False  # half-open: one request is trying the target
    current: float = 0.0  # smooth weighted round robin


class Health:
    """Per worker: requests in flight per target, and each target's circuit."""

    def __init__(
        self,
        failures: int,
        seconds: float,
        report: Callable[[str, str, int], None] = lambda target, state, in_flight: None,
    ) -> None:
        self.failures, self.seconds = failures, seconds
        self.report = report  # (target, state, in flight) to the metrics
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def _state(self, target: Target) -> _State:
        state = self._states.get(target.name)
        if state is None:
            state = self._states[target.name] = _State()
        return state

    def state(self, target: Target, now: float | None = None) -> str:
        with self._lock:
            return self._label(self._state(target), time.monotonic() if now is None else now)

    @staticmethod
    def _label(state: _State, now: float) -> str:
        if state.open_until == 0.0:
            return CLOSED
        return OPEN if now < state.open_until or state.probing else HALF_OPEN

    def order(self, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        """The try order: priority tiers, lowest first; within a tier the next pick of a
        smooth weighted round robin among the targets with the fewest requests in flight per
        weight, then the rest of the tier by weight."""
        if len(targets) == 1:
            return targets
        tiers: dict[int, list[Target]] = {}
        for t in targets:
            tiers.setdefault(t.priority, []).append(t)
        out: list[Target] = []
        with self._lock:
            for priority in sorted(tiers):
                tier = tiers[priority]
                if len(tier) == 1:
                    out.extend(tier)
                    continue
                states = [self._state(t) for t in tier]
                total = sum(t.weight for t in tier)
                for t, s in zip(tier, states, strict=True):
                    s.current += t.weight
                load = [s.in_flight / t.weight for t, s in zip(tier, states, strict=True)]
                least = min(load)
                pick = max(
                    (i for i in range(len(tier)) if load[i] == least),
                    key=lambda i: states[i].current,
                )
                states[pick].current -= total
                rest = sorted(
                    (i for i in range(len(tier)) if i != pick),
                    key=lambda i: (load[i], -tier[i].weight),
                )
                out.extend([tier[pick], *(tier[i] for i in rest)])
        return tuple(out)

    def admit(self, target: Target) -> bool:
        """Whether a request may try the target now: its circuit is closed, or it is half-open
        and no other request is probing it (this one becomes the probe)."""
        now = time.monotonic()
        with self._lock:
            state = self._state(target)
            label = self._label(state, now)
            if label == CLOSED:
                return True
            if label == HALF_OPEN:
                state.probing = True
                self._publish(target, state, now)
                return True
            return False

    def retry_after(self, targets: tuple[Target, ...]) -> int:
        now = time.monotonic()
        with self._lock:
            soonest = min(self._state(t).open_until for t in targets)
        return max(1, min(60, int(soonest - now) + 1))

    @contextmanager
    def attempt(self, target: Target) -> Iterator[None]:
        """Count the target's request in flight for the body of the `with`. Only targets of
        the routing table are tracked: a plain route's model name is the caller's to choose."""
        if not target.configured:
            yield
            return
        with self._lock:
            state = self._state(target)
            state.in_flight += 1
            self._publish(target, state, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                state.in_flight -= 1
                self._publish(target, state, time.monotonic())

    def failed(self, target: Target, reason: str | None) -> bool:
        """Record a failure; say whether it opened the target's circuit."""
        with self._lock:
            state = self._state(target)
            probe, state.probing = state.probing, False
            if reason not in UNHEALTHY:
                return False
            state.failures += 1
            opens = probe or state.failures >= self.failures
            if opens:
                state.opened += 1
                factor = min(MAX_BACKOFF_FACTOR, 2 ** (state.opened - 1))
                state.open_until = time.monotonic() + self.seconds * factor
            self._publish(target, state, time.monotonic())
            return opens

    def succeeded(self, target: Target) -> bool:
        """Record a success (it closes the circuit); say whether the circuit had been open."""
        with self._lock:
            state = self._state(target)
            was_open = state.open_until != 0.0
            state.failures = state.opened = 0
            state.open_until, state.probing = 0.0, False
            self._publish(target, state, time.monotonic())
            return was_open

    def report_all(self, targets: list[Target]) -> list[dict[str, object]]:
        now = time.monotonic()
        with self._lock:
            out: list[dict[str, object]] = []
            for t in targets:
                s = self._state(t)
                out.append(
                    {"target": t.name, "state": self._label(s, now), "in_flight": s.in_flight}
                )
            return out

    def _publish(self, target: Target, state: _State, now: float) -> None:
        if target.configured:
            self.report(target.name, self._label(state, now), state.in_flight)
