"""The one typed record of what a request did, read by the access log and the metrics.

Views write it from the core's outcome (`took`), the error handlers from the error, the limiter
when it refused; `blueprints/access_log.py` creates it per request and reads it at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import g

from services.core.types import StreamStats, Usage


@dataclass(slots=True)
class AccessRecord:
    model: str | None = None  # the model the caller named; None: no model in this request
    stream: bool = False
    backend: str | None = None  # the backend that took the request; None: none did
    usage: Usage | None = None  # a whole reply's usage (a stream's is in `stats`)
    stats: StreamStats | None = None  # a stream's progress, read when it closes
    cache: str | None = None  # HIT, MISS or BYPASS (also the X-Cache header); None: not asked
    limited: str | None = None  # the error type of a limit Relay itself refused with
    routed: bool = True  # False: the router did not pick the backend (pass-through)
    error_type: str | None = None  # the error the request was answered with (its envelope's)
    error_code: str | None = None
    abandoned: bool = False  # a stream its client left before the end
    # The target that answered, `backend/upstream model` (X-Relay-Route); None: none did, or
    # the reply came from the cache (docs/routing.md).
    route: str | None = None

    def took(
        self,
        backend: str,
        cache: str | None = None,
        usage: Usage | None = None,
        route: str | None = None,
    ) -> None:
        """Record the core's outcome: which backend (and target) answered, from the cache or
        not, its usage."""
        self.backend, self.cache, self.usage, self.route = backend, cache, usage, route

    def spent(self) -> Usage | None:
        """The tokens the request used: a stream's as it went, else the whole reply's."""
        return self.stats.usage if self.stats is not None else self.usage


def access() -> AccessRecord:
    """This request's record (an empty one outside the /v1 request cycle)."""
    record = g.get("access")
    if record is None:
        record = g.access = AccessRecord()
    return record  # type: ignore[no-any-return]
