"""A per-address request limit for the unauthenticated status pages `/` and `/ready`.

The /v1 limits do not reach these routes; this one counts in the same store (memory, or Redis
when REDIS_URL is set), RELAY_STATUS_PER_MINUTE loads per client address (docs/api.md "Service
page"). With the store down the pages stay up: a probe must not fail over Redis.
"""

from __future__ import annotations

import time

from flask import request
from limits import RateLimitItemPerMinute

from blueprints.context import gateway
from services.access.ratelimit import go_duration, limiter, retry_after
from services.core.errors import RateLimitError
from services.state.redis_client import RedisError

SCOPE = "status"


def limit_status_page() -> None:
    """Raise a 429 when this address loaded the status pages too often this minute."""
    gw = gateway()
    per_minute = gw.settings.access.status_per_minute
    if not per_minute or (gw.redis is not None and not gw.redis.usable()):
        return
    item = RateLimitItemPerMinute(per_minute)
    address = request.remote_addr or "-"
    try:
        if limiter.limiter.hit(item, SCOPE, address):
            return
        reset = limiter.limiter.get_window_stats(item, SCOPE, address).reset_time
    except RedisError as e:
        if gw.redis is not None:
            gw.redis.failed(e, "status limit")
        return
    wait = reset - time.time()
    raise RateLimitError(
        f"Rate limit reached for status pages on your address: Limit {per_minute} per min. "
        f"Please try again in {go_duration(wait)}.",
        retry_after=retry_after(wait),
    )
