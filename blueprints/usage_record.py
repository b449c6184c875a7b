"""The usage ledger's record of a finished request, built from what the access log has.

Called by `blueprints/access_log.py` when a request ends (a stream: when it closes); the
ledger queues it and writes it later (services/usage/ledger.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from blueprints.access_record import AccessRecord
from services.core.types import Usage
from services.usage.record import UsageRecord
from services.usage.schema import ENDPOINT_LENGTH, KEY_LENGTH, MODEL_LENGTH, SHORT_LENGTH

# The API's paths are the ledger's; /v1/usage itself (reading the ledger) is not usage.
LEDGER_PREFIXES = ("/v1/", "/api/")
NOT_USAGE = ("/v1/usage", "/v1/usage/records")
STREAM_ERROR = "stream_error"  # a stream that failed after its headers went out


def usage_record(
    line: dict[str, Any],
    fields: AccessRecord,
    seconds: float,
    usage: Usage | None,
    first_token: float | None,
) -> UsageRecord | None:
    """The record of one finished API request; None for paths the ledger does not keep."""
    path: str = line["path"]
    if not path.startswith(LEDGER_PREFIXES) or path.rstrip("/") in NOT_USAGE:
        return None
    stats = fields.stats
    error_type, error_code = fields.error_type, fields.error_code
    abandoned = fields.abandoned  # the client left: a failure seen after it is the cut-off's
    if stats is not None and stats.error and error_type is None and not abandoned:
        error_type = STREAM_ERROR
    if abandoned and stats is not None and stats.usage is None and stats.chunks > 1:
        # What it sent before the client left: one token per content chunk (the role chunk is
        # none), as services/core/usage_estimate.py counts streamed pieces.
        usage = Usage(0, stats.chunks - 1, estimated=True)
    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    key = line["key"]
    model = _cut(fields.model, MODEL_LENGTH)
    return UsageRecord(
        ts=started,
        request_id=line["request_id"] or "-",
        key_name=_cut(key if key != "-" else None, KEY_LENGTH),
        model=model,
        backend=_cut(fields.backend, SHORT_LENGTH),
        upstream_model=model if fields.backend else None,
        endpoint=_cut(path, ENDPOINT_LENGTH) or "/",
        method=line["method"][:16],
        status=line["status"],
        error_type=_cut(error_type, SHORT_LENGTH),
        error_code=_cut(error_code, SHORT_LENGTH),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        tokens_estimated=bool(usage and usage.estimated),
        cache=fields.cache,
        duration_ms=round(seconds * 1000, 3),
        first_token_ms=round(first_token * 1000, 3) if first_token is not None else None,
        streamed=fields.stream,
        abandoned=abandoned,
        client=_cut(line["client"] if line["client"] != "-" else None, SHORT_LENGTH),
    )


def _cut(text: str | None, most: int) -> str | None:
    return text[:most] if text else None
