"""Rate limits. flask-limiter counts requests per key, or per client address for requests without
a valid key; tokens per minute are checked before a request and charged after it by real usage.

The only services module that touches flask: the limiter's key function must read the request.
Headers and errors follow docs/design.md §5.2 and §5.3.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limit, Limiter
from limits import RateLimitItem, RateLimitItemPerMinute, WindowStats

from config import Settings
from services.access.keys import ANONYMOUS, ApiKey
from services.core.errors import GatewayError, RateLimitError
from services.state.redis_client import RedisError, RedisLink, redis_options
from settings.access import Limits

# The keyed API: /v1 and the /api alias of the chat route (docs/api.md). Only these are limited.
API_PREFIXES = ("/v1/", "/api/")
MAX_RETRY_AFTER = 60  # seconds; every SDK version honours a Retry-After up to this (§5.2)
T = TypeVar("T")


class TokensRateLimitError(RateLimitError):
    type = "tokens"


class LimiterUnavailableError(GatewayError):
    status = 503
    type = "service_unavailable_error"
    code = "rate_limiter_unavailable"


def _gateway_settings() -> Settings:
    return current_app.extensions["relay"].settings  # type: ignore[no-any-return]


def _redis_link() -> RedisLink | None:
    return current_app.extensions["relay"].redis  # type: ignore[no-any-return]


def rate_limit_key() -> str:
    """Whom a request counts against: its key, or its address when it has no valid key."""
    key = g.get("api_key")
    if key is None or key is ANONYMOUS:
        return f"addr:{request.remote_addr}"
    return f"key:{key.name}"


def _request_limits() -> str:
    key: ApiKey | None = g.get("api_key")
    if key is None:
        per_minute = _gateway_settings().access.unauthenticated_per_minute
        return f"{per_minute}/minute" if per_minute else ""
    limits = _gateway_settings().access.limits if key is ANONYMOUS else key.limits
    return limit_string(limits)


def limit_string(limits: Limits) -> str:
    """Render request limits in flask-limiter's notation, e.g. '60/minute;1000/day'."""
    parts = zip(
        (limits.requests_per_minute, limits.requests_per_hour, limits.requests_per_day),
        ("minute", "hour", "day"),
        strict=True,
    )
    return ";".join(f"{n}/{unit}" for n, unit in parts if n)


def _request_cost() -> int:
    """A request refused with two keys (x-api-key, then the Bearer token, on Anthropic's face)
    counts as two tries: else each request guessed twice (docs/threat-model.md
    "The Ollama and Anthropic faces")."""
    if g.get("api_key") is None:
        return int(g.get("secrets_tried", 1))
    return 1


limiter = Limiter(
    key_func=rate_limit_key,
    # One shared scope: a key's requests count together on every /v1 route.
    default_limits=[Limit(_request_limits, scope="requests", shared=True, cost=_request_cost)],
    strategy="fixed-window",
    headers_enabled=False,  # Relay writes OpenAI's header names and formats itself
)


@limiter.request_filter
def _exempt() -> bool:
    # /health and /ready are never limited. With Redis down, skip the storage altogether
    # (fail open) or refuse (fail closed), instead of waiting on a dead socket per request.
    if not request.path.startswith(API_PREFIXES):
        return True
    link = _redis_link()
    if link is not None and not link.usable():
        if _gateway_settings().access.limits_fail_open:
            return True
        raise LimiterUnavailableError("Rate limits cannot be checked right now; try again shortly.")
    # No request limit for this caller: skip flask-limiter's resolution of limits altogether.
    return not _request_limits()


class _SwallowedErrors(logging.Handler):
    """flask-limiter logs the storage errors it lets pass (fail open); mark Redis down instead."""

    def __init__(self, link: RedisLink) -> None:
        super().__init__(logging.ERROR)
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, Exception):
            error = Exception(record.getMessage())
        self.link.failed(error, "rate limit")


def init_limiter(app: Flask, settings: Settings, link: RedisLink | None) -> None:
    """Bind the limiter to the app with memory storage, or Redis when REDIS_URL is set."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis.url or "memory://"
    if settings.redis.url:
        app.config["RATELIMIT_STORAGE_OPTIONS"] = redis_options(settings.redis)
    app.config["RATELIMIT_SWALLOW_ERRORS"] = settings.access.limits_fail_open
    limiter.init_app(app)
    _run_hooks_only_when_limited(app)
    stdlib = logging.getLogger("flask-limiter")
    stdlib.propagate = False
    if link is not None:
        stdlib.addHandler(_SwallowedErrors(link))


def _limiter_needed() -> bool:
    """Whether flask-limiter must see this request: the same answer as _exempt, reached without
    flask-limiter's own resolution of endpoints and limit lists."""
    if not request.path.startswith(API_PREFIXES):
        return False
    link = _redis_link()
    if link is not None and not link.usable():
        return True  # _exempt decides: skip (fail open) or refuse (fail closed)
    return bool(_request_limits())


def _run_hooks_only_when_limited(app: Flask) -> None:
    """flask-limiter runs three hooks on every request, even when no limit applies to the caller
    (about 60 µs, docs/design.md §12): run them only for requests a limit applies to."""

    def owned(hook: Any) -> bool:
        target = hook.args[0] if isinstance(hook, functools.partial) else hook
        return getattr(target, "__self__", target) is limiter

    def before(hook: Callable[[], None]) -> Callable[[], None]:
        def gated() -> None:
            if _limiter_needed():
                g.limiter_ran = True
                hook()

        return gated

    def after(hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
        return lambda response: hook(response) if g.get("limiter_ran") else response

    def teardown(hook: Callable[[BaseException | None], None]) -> Callable[..., None]:
        def gated(error: BaseException | None = None) -> None:
            if g.get("limiter_ran"):
                hook(error)

        return gated

    for funcs, gate in (
        (app.before_request_funcs, before),
        (app.after_request_funcs, after),
        (app.teardown_request_funcs, teardown),
    ):
        hooks: list[Any] = funcs.setdefault(None, [])
        hooks[:] = [gate(h) if owned(h) else h for h in hooks]


def _guarded(link: RedisLink | None, what: str, call: Callable[[], T], fallback: T) -> T:
    """Run a storage call; with Redis down, fall back (limits then fail open or closed)."""
    if link is not None and not link.usable():
        return fallback
    try:
        return call()
    except RedisError as e:
        if link is None:
            raise
        link.failed(e, what)
        return fallback


def _tokens_item(key: ApiKey) -> RateLimitItem | None:
    n = key.limits.tokens_per_minute
    return RateLimitItemPerMinute(n) if n else None


def check_tokens(key: ApiKey) -> None:
    """Refuse a request (429, type tokens) when the key's tokens for this minute are used up."""
    item = _tokens_item(key)
    if item is None:
        return
    link, fail_open = _redis_link(), _gateway_settings().access.limits_fail_open
    stats = _guarded(
        link, "token limit", lambda: limiter.limiter.get_window_stats(item, key.name), None
    )
    if stats is None:
        if fail_open:
            return
        raise LimiterUnavailableError("Rate limits cannot be checked right now; try again shortly.")
    if stats.remaining > 0:
        return
    wait = stats.reset_time - time.time()
    used = _guarded(link, "token limit", lambda: limiter.storage.get(item.key_for(key.name)), 0)
    raise TokensRateLimitError(
        f"Rate limit reached for tokens per min (TPM) on key '{key.name}': Limit {item.amount}, "
        f"Used {used or item.amount}. Please try again in {go_duration(wait)}.",
        retry_after=retry_after(wait),
    )


def charge_tokens(link: RedisLink | None, key: ApiKey, tokens: int) -> None:
    """Count the tokens a finished request used against its key's per-minute budget."""
    item = _tokens_item(key)
    if item is None or tokens <= 0:
        return
    _guarded(link, "token charge", lambda: limiter.limiter.hit(item, key.name, cost=tokens), None)


def requests_error() -> RateLimitError:
    """Build the 429 for a breached request limit (call while the request is being handled)."""
    breached = limiter.current_limit
    key = g.get("api_key")
    who = f"key '{key.name}'" if key is not None and key is not ANONYMOUS else "your address"
    if breached is None:
        return RateLimitError(f"Rate limit reached for requests on {who}.", retry_after=1)
    item = breached.limit
    wait = breached.window.reset_time - time.time()
    unit = {60: "min (RPM)", 3600: "hour (RPH)", 86400: "day (RPD)"}.get(item.get_expiry(), "")
    return RateLimitError(
        f"Rate limit reached for requests per {unit} on {who}: Limit {item.amount}, "
        f"Used {item.amount - breached.window.remaining}. "
        f"Please try again in {go_duration(wait)}.",
        retry_after=retry_after(wait),
    )


def rate_limit_headers(key: ApiKey | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits that applied to this request."""
    headers: dict[str, str] = {}
    item_t = _tokens_item(key) if key is not None else None
    if item_t is None and not (g.get("limiter_ran") and limiter.current_limits):
        return headers  # no limit applied: nothing to report, no storage to ask
    link = _redis_link()
    no_windows: list[tuple[RateLimitItem, WindowStats]] = []
    windows = _guarded(
        link,
        "limit headers",
        lambda: [(r.limit, r.window) for r in limiter.current_limits],
        no_windows,
    )
    if windows:
        # Report the limit closest to running out, so clients slow down in time.
        item, window = min(windows, key=lambda w: (w[1].remaining, w[0].get_expiry()))
        headers.update(_headers("requests", item.amount, window.remaining, window.reset_time))
    if item_t is not None and key is not None:
        name = key.name
        stats = _guarded(
            link, "limit headers", lambda: limiter.limiter.get_window_stats(item_t, name), None
        )
        if stats is not None:
            headers.update(_headers("tokens", item_t.amount, stats.remaining, stats.reset_time))
    return headers


def _headers(kind: str, limit: int, remaining: int, reset_time: float) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
        f"x-ratelimit-reset-{kind}": go_duration(reset_time - time.time()),
    }


def retry_after(seconds: float) -> int:
    """Whole seconds for Retry-After: at least 1, never above 60."""
    return max(1, min(MAX_RETRY_AFTER, math.ceil(seconds)))


def go_duration(seconds: float) -> str:
    """Format a duration as Go does, like OpenAI's reset headers: 20ms, 1s, 6m0s, 4h36m54.72s."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
