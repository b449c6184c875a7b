"""Request ids and one access line (and metrics record) per request; streams: on close."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, request
from loguru import logger

from blueprints.access_record import AccessRecord, access
from blueprints.context import gateway
from blueprints.metrics import record_request
from blueprints.usage_record import usage_record
from services.common import log_setup
from services.common.log_setup import cut, one_field
from services.common.metrics import Metrics
from services.core.types import Usage, new_id
from services.usage.ledger import Ledger

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


# Visible ASCII but `%` (which starts an escape): what X-Relay-Route carries as it is.
_ROUTE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def _start() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _SAFE_ID.match(given) else new_id("req_")
    g.started = time.perf_counter()
    g.access = AccessRecord()


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or new_id("req_")
    fields = access()
    if fields.route:  # the target that answered (docs/routing.md)
        # A model name is the caller's text when no alias renamed it: percent-encode anything
        # outside visible ASCII, or a control character would make an invalid header (a 500).
        response.headers["X-Relay-Route"] = quote(fields.route, safe=_ROUTE_SAFE)
    line = dict(
        request_id=g.get("request_id"),
        key=getattr(g.get("api_key"), "name", "-"),
        client=cut(request.remote_addr or "-"),  # an X-Forwarded-For hop, behind a proxy
        method=request.method,
        path=request.path,
        route=request.url_rule.rule if request.url_rule else "unmatched",
        status=response.status_code,
        started=g.get("started", time.perf_counter()),
    )
    metrics, ledger = gateway().metrics, gateway().usage
    if response.is_streamed:
        metrics.streams.inc()

        def on_close() -> None:
            metrics.streams.dec()
            _write(line, fields, metrics, ledger)

        response.call_on_close(on_close)
    else:
        _write(line, fields, metrics, ledger)
    return response


def _write(
    line: dict[str, Any], fields: AccessRecord, metrics: Metrics, ledger: Ledger | None
) -> None:
    # Runs after the request context is gone for streams: use only what was captured.
    seconds = time.perf_counter() - line["started"]
    stats = fields.stats
    usage: Usage | None = fields.spent()
    if log_setup.enabled("INFO"):  # else the line would be built only to be thrown away
        _log_line(line, fields, seconds, usage)
    first_token = stats.first_token - line["started"] if stats and stats.first_token else None
    record_request(metrics, line, fields, seconds, usage, first_token)
    if ledger is not None:
        record = usage_record(line, fields, seconds, usage, first_token)
        if record is not None:
            ledger.submit(record)


def _log_line(
    line: dict[str, Any], fields: AccessRecord, seconds: float, usage: Usage | None
) -> None:
    stats = fields.stats
    tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
    if usage and usage.estimated:  # the upstream gave no counts (services/core/usage_estimate.py)
        tokens = "~" + tokens
    # Path, model and error come from callers or upstreams: cut here, escaped by the text sink.
    path, model = cut(line["path"]), cut(fields.model or "-")
    failure = cut(stats.error) if stats and stats.error else None
    error = f" error={failure!r}" if failure else ""
    cache = f" cache={fields.cache}" if fields.cache else ""
    route = f" route={cut(one_field(fields.route))}" if fields.route else ""
    structured = {
        "request_id": line["request_id"],
        "client": line["client"],
        "key": line["key"],
        "method": line["method"],
        "path": path,
        "status": line["status"],
        "model": model if fields.model is not None else None,
        "backend": fields.backend,
        "ms": round(seconds * 1000, 1),
        "stream": fields.stream,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "tokens_estimated": bool(usage and usage.estimated),
        "error": failure,
        "cache": fields.cache,
        "route": fields.route,
    }
    logger.bind(access=structured).info(
        "{} client={} key={} {} {} model={} backend={} status={} ms={:.1f} tokens={} stream={}{}",
        line["request_id"],
        one_field(line["client"]),
        line["key"],
        line["method"],
        cut(one_field(line["path"])),
        cut(one_field(fields.model or "-")),
        fields.backend or "-",
        line["status"],
        seconds * 1000,
        tokens,
        "yes" if fields.stream else "no",
        cache + route + error,
    )


def register_access_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
