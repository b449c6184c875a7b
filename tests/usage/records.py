"""A usage record with plain defaults, for tests that write the ledger's tables directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.usage.record import UsageRecord


def a_record(**changes: Any) -> UsageRecord:
    """One successful, whole chat request of key `team` on llama3.2; `changes` replace fields."""
    fields: dict[str, Any] = dict(
        ts=datetime.now(UTC).replace(tzinfo=None),
        request_id="req_test",
        key_name="team",
        model="llama3.2",
        backend="ollama",
        upstream_model="llama3.2",
        endpoint="/v1/chat/completions",
        method="POST",
        status=200,
        error_type=None,
        error_code=None,
        prompt_tokens=0,
        completion_tokens=0,
        reasoning_tokens=None,
        cached_tokens=None,
        tokens_estimated=False,
        cache=None,
        duration_ms=1.0,
        first_token_ms=None,
        streamed=False,
        abandoned=False,
        client="127.0.0.1",
    )
    return UsageRecord(**{**fields, **changes})
