"""Request ids and one access line per request; for streams the line is written on close."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Flask, Response, g, request
from loguru import logger

from services.types import Usage, new_id

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _start() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _SAFE_ID.match(given) else new_id("req_")
    g.started = time.perf_counter()
    g.access = {}


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or new_id("req_")
    fields = dict(g.get("access") or {})
    line = dict(
        request_id=g.get("request_id"),
        key=getattr(g.get("api_key"), "name", "-"),
        client=request.remote_addr or "-",
        method=request.method,
        path=request.path,
        status=response.status_code,
        started=g.get("started", time.perf_counter()),
    )
    if response.is_streamed:
        response.call_on_close(lambda: _write(line, fields))
    else:
        _write(line, fields)
    return response


def _write(line: dict[str, Any], fields: dict[str, Any]) -> None:
    ms = (time.perf_counter() - line["started"]) * 1000
    stats = fields.get("stats")
    usage: Usage | None = stats.usage if stats else fields.get("usage")
    tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
    error = f" error={stats.error!r}" if stats and stats.error else ""
    cache = f" cache={fields['cache']}" if fields.get("cache") else ""
    logger.info(
        "{} client={} key={} {} {} model={} backend={} status={} ms={:.1f} tokens={} stream={}{}{}",
        line["request_id"],
        line["client"],
        line["key"],
        line["method"],
        line["path"],
        fields.get("model", "-"),
        fields.get("backend", "-"),
        line["status"],
        ms,
        tokens,
        "yes" if fields.get("stream") else "no",
        cache,
        error,
    )


def register_access_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
