"""The one Redis connection of a worker (REDIS_URL) and what is known of its health.

Everything that keeps state in Redis (limits, reply cache, in-flight sharing, conversation
stores) builds on `connect(settings)`. Callers catch `RedisError`, report it with `failed()` and
carry on without Redis; `usable()` then answers False without touching the network until a
ping, tried at most once a second, succeeds again.
"""

from __future__ import annotations

import time

import redis
from loguru import logger
from redis.exceptions import RedisError

from settings.access import RedisSettings

__all__ = ["RedisError", "RedisLink", "connect", "redis_options"]
PROBE_INTERVAL = 1.0


def redis_options(settings: RedisSettings) -> dict[str, float]:
    """Socket options for every Redis client Relay makes (also flask-limiter's storage)."""
    return {"socket_connect_timeout": settings.timeout, "socket_timeout": settings.timeout}


class RedisLink:
    """A Redis client plus a down/up state that is logged once per change, loudly."""

    def __init__(self, client: redis.Redis, where: str) -> None:
        self.client = client
        self.where = where  # the URL without any password, for log lines
        self._down_since: float | None = None
        self._probed = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def usable(self) -> bool:
        """Tell whether Redis is believed up; when down, probe it at most once a second."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        if now - self._probed < PROBE_INTERVAL:
            return False
        self._probed = now
        try:
            self.client.ping()
        except RedisError:
            return False
        logger.warning(
            "Redis at {} is reachable again after {:.1f}s", self.where, now - self._down_since
        )
        self._down_since = None
        return True

    def failed(self, error: Exception, what: str) -> None:
        """Record that a Redis call failed; the first failure of an outage is logged as an error."""
        if self._down_since is None:
            self._down_since = self._probed = time.monotonic()
            logger.error(
                "Redis at {} is unreachable ({}: {}); {}", self.where, what, error, _DEGRADED
            )


_DEGRADED = "running without it: limits as RELAY_LIMITS_FAIL_OPEN says, reply cache skipped"


def connect(settings: RedisSettings) -> RedisLink | None:
    """Build the worker's Redis client from REDIS_URL, or None when it is not set."""
    if not settings.url:
        return None
    client = redis.Redis.from_url(settings.url, **redis_options(settings))
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}"
    return RedisLink(client, where.rstrip(":"))
