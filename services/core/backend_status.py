"""What the backends answered lately, for the unauthenticated pages `/` and `/ready`.

Those pages must not turn each load into calls to every backend (one of which may be a paid
upstream called with the gateway's own key): each worker keeps one snapshot of every backend's
state and routed models for RELAY_STATUS_CACHE_SECONDS, and refreshes it one caller at a time;
callers arriving during a refresh wait for it instead of calling the backends themselves
(docs/api.md "Service page").
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from services.backends.base import Backend
from services.core.errors import GatewayError
from services.core.router import Router


@dataclass(frozen=True, slots=True)
class BackendState:
    name: str
    type: str
    status: str  # "ok" or "unavailable"
    error: str | None
    models: tuple[str, ...]  # the listed models the router sends to this backend

    def health(self) -> dict[str, str]:
        """The state without the models: what anyone may see."""
        state = {"type": self.type, "status": self.status}
        if self.error is not None:
            state["error"] = self.error
        return state


class BackendStatus:
    def __init__(self, router: Router, ttl: float) -> None:
        self._router, self._ttl = router, ttl
        self._lock = threading.Lock()  # cooperative under gevent: waiters yield, not block
        self._states: tuple[BackendState, ...] | None = None
        self._taken = 0.0

    def states(self) -> tuple[BackendState, ...]:
        """Every backend's state, at most RELAY_STATUS_CACHE_SECONDS old."""
        states = self._fresh()
        if states is not None:
            return states
        with self._lock:
            states = self._fresh()  # refreshed by the caller this one waited for
            if states is None:
                states = tuple(self._ask(b) for b in self._router.backends)
                self._states, self._taken = states, time.monotonic()
            return states

    def _fresh(self) -> tuple[BackendState, ...] | None:
        if self._states is None or time.monotonic() - self._taken >= self._ttl:
            return None
        return self._states

    def _ask(self, backend: Backend) -> BackendState:
        try:
            backend.check()
        except GatewayError as e:
            return BackendState(backend.name, backend.type, "unavailable", e.message, ())
        try:
            listed = backend.list_models()
        except GatewayError:
            listed = []
        routed = (m.id for m in listed if self._router.resolve_or_none(m.id) is backend)
        return BackendState(backend.name, backend.type, "ok", None, tuple(sorted(routed)))
