"""The app-scoped services, built once per process in create_app()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from config import Settings
from services.backend_status import BackendStatus
from services.backends import build_backends
from services.backpressure import Gate, Gates
from services.images import ImageLoader
from services.keys import KeyStore
from services.kv_store import StoreFactory
from services.metrics import Metrics
from services.redis_client import RedisLink, connect
from services.reply_cache import ReplyCache, build_cache
from services.response_store import ResponseStore
from services.router import Router


@dataclass(slots=True)
class Gateway:
    settings: Settings
    router: Router
    keys: KeyStore
    responses: ResponseStore
    metrics: Metrics
    # Keys, limits and reply cache (issue 4)
    cache: ReplyCache
    status: BackendStatus  # what / and /ready show: backend states, cached for a few seconds
    redis: RedisLink | None = None
    gates: Gates = field(default_factory=lambda: Gates({}))


def build_gateway(settings: Settings) -> Gateway:
    """Wire the services together from the settings."""
    images = ImageLoader(settings)
    redis = connect(settings.redis)
    stores = StoreFactory(redis)
    metrics = Metrics(settings.metrics_dir)
    # A request waits for an identical one in flight at most as long as a backend may take.
    wait = max((b.connect_timeout + b.read_timeout for b in settings.backends), default=60.0)
    router = Router(build_backends(settings, images, stores))
    return Gateway(
        settings=settings,
        router=router,
        keys=KeyStore(
            settings.api_keys,
            settings.access.keys,
            defaults=settings.access.limits,
            source=settings.config_file,
        ),
        responses=ResponseStore(stores.make("responses", settings.response_ttl)),
        metrics=metrics,
        cache=build_cache(
            settings.access.cache_ttl, settings.access.cache_max_entries, redis, wait
        ),
        redis=redis,
        gates=_gates(settings, metrics),
        status=BackendStatus(router, settings.status_cache_seconds),
    )


def _gates(settings: Settings, metrics: Metrics) -> Gates:
    """A backpressure gate for each backend with a limit, reporting to the metrics."""

    def reporter(name: str) -> Callable[[int, int], None]:
        def report(in_flight: int, queued: int) -> None:
            metrics.backend_in_flight.labels(name).set(in_flight)
            metrics.backend_queued.labels(name).set(queued)

        return report

    return Gates(
        {
            b.name: Gate(
                f"{b.type.capitalize()} backend '{b.name}'",
                b.max_in_flight,
                b.max_queue,
                b.queue_timeout,
                reporter(b.name),
            )
            for b in settings.backends
            if b.max_in_flight > 0
        }
    )
