"""Rate limits around every /v1 request: the 429 envelope, x-ratelimit-* headers on every
response, the token check before a request and the token charge after it (streams: on close).
"""

from __future__ import annotations

from flask import Flask, Response, g, request
from flask_limiter import RateLimitExceeded

from blueprints.access_record import access
from blueprints.context import gateway
from blueprints.error_handlers import render_error  # the one error renderer
from services.access import ratelimit
from services.access.keys import ApiKey
from services.access.ratelimit import API_PREFIXES
from services.core.types import Usage
from services.state.redis_client import RedisError, RedisLink


def _check_tokens() -> None:
    key = g.get("api_key")
    if key is not None and request.method == "POST" and request.path.startswith(API_PREFIXES):
        ratelimit.check_tokens(key)


def _after(response: Response) -> Response:
    if not request.path.startswith(API_PREFIXES):
        return response
    key: ApiKey | None = g.get("api_key")
    record = access()
    stats = record.stats
    # A cached answer costs no tokens; a stream is charged what it used when it ends.
    if key is not None and record.cache != "HIT":
        link = gateway().redis
        if stats is not None:
            response.call_on_close(lambda: _charge(link, key, stats.usage))
        else:
            _charge(link, key, record.usage)
    response.headers.update(ratelimit.rate_limit_headers(key))
    return response


def _charge(link: RedisLink | None, key: ApiKey, usage: Usage | None) -> None:
    if usage is not None:
        ratelimit.charge_tokens(link, key, usage.total_tokens)


def register_limits(app: Flask) -> None:
    """Bind flask-limiter and Relay's token limits and headers to the app."""
    gw = app.extensions["relay"]
    ratelimit.init_limiter(app, gw.settings, gw.redis)
    app.before_request(_check_tokens)
    app.after_request(_after)

    @app.errorhandler(RateLimitExceeded)
    def too_many_requests(e: RateLimitExceeded) -> Response:
        error = ratelimit.requests_error()
        if "access" in g:
            access().limited = error.type  # for the relay_rate_limited metric
        return render_error(error)

    @app.errorhandler(RedisError)
    def limits_unavailable(e: RedisError) -> Response:
        # Only reached with RELAY_LIMITS_FAIL_OPEN=false: flask-limiter re-raised a storage error.
        if gw.redis is not None:
            gw.redis.failed(e, "rate limit")
        return render_error(
            ratelimit.LimiterUnavailableError(
                "Rate limits cannot be checked right now; try again shortly."
            )
        )
