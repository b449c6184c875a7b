"""The reply cache's HTTP side: each /v1 request's Cache-Control read into a policy on `g`, and
`X-Cache: HIT | MISS | BYPASS` on every /v1 response.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from blueprints.access_record import access
from services.access.ratelimit import API_PREFIXES
from services.state.reply_cache import BYPASS, parse_cache_control


def _read_policy() -> None:
    key = g.get("api_key")
    if key is not None:
        g.cache_policy = parse_cache_control(
            request.headers.get("Cache-Control", ""), request.headers.get("Pragma", ""), key.tenant
        )


def _say_cache_status(response: Response) -> Response:
    if request.path.startswith(API_PREFIXES):
        response.headers["X-Cache"] = access().cache or BYPASS
    return response


def register_cache_control(app: Flask) -> None:
    app.before_request(_read_policy)
    app.after_request(_say_cache_status)
