"""One finished request, as the ledger keeps it: who, what, how it went, how much it used.

Never the key itself and never prompt or reply text: only the key's name, the model's name and
numbers (docs/operations.md "Usage").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class UsageRecord:
    ts: datetime  # when the request arrived, UTC (naive: the database keeps UTC)
    request_id: str
    key_name: str | None  # None: no valid key (a 401, or a request before authentication)
    model: str | None  # the model the caller asked for
    backend: str | None  # the backend that took it; None: none did
    upstream_model: str | None  # the model asked of the backend (the same, for now)
    endpoint: str  # the request's path
    method: str
    status: int
    error_type: str | None  # the error envelope's type (stream_error: failed after the headers)
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int | None
    cached_tokens: int | None
    tokens_estimated: bool  # Relay counted or estimated: the upstream did not say
    cache: str | None  # HIT, MISS or BYPASS; None: the cache was not asked
    duration_ms: float
    first_token_ms: float | None  # streams: until the first token went out
    streamed: bool
    abandoned: bool  # a stream the client left before it ended
    client: str | None  # the client's address

    def row(self) -> dict[str, Any]:
        """The record as a database row (column name to value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = tuple(f.name for f in fields(UsageRecord))
