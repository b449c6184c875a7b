"""The app-scoped services, built once per process in create_app()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from config import Settings
from services.access.keys import KeyStore
from services.backends import build_backends
from services.backends.base import BackendTools
from services.backends.image_inputs import ImageLoader
from services.common.metrics import Metrics
from services.core.backend_status import BackendStatus
from services.core.backpressure import Gate, Gates
from services.core.router import Router
from services.core.routes import CLOSED, Health
from services.state.file_store import LastingFiles
from services.state.kv_store import Budget, StoreFactory
from services.state.lasting_files import build_lasting_files
from services.state.redis_client import RedisLink, connect
from services.state.reply_cache import CacheLimits, ReplyCache, build_cache
from services.state.response_store import ResponseStore
from services.usage.budgets import BudgetBook
from services.usage.ledger import Ledger, build_ledger


@dataclass(slots=True)
class Gateway:
    settings: Settings
    router: Router
    keys: KeyStore
    responses: ResponseStore
    metrics: Metrics
    cache: ReplyCache
    status: BackendStatus  # what / and /ready show: backend states, cached for a few seconds
    redis: RedisLink | None = None
    gates: Gates = field(default_factory=lambda: Gates({}))
    files: LastingFiles | None = None  # GET /files serves what the backends kept
    usage: Ledger | None = None  # the usage ledger; None when RELAY_USAGE is off
    budgets: BudgetBook | None = None  # per-key budgets, read from the ledger; None with it off


def build_gateway(settings: Settings) -> Gateway:
    """Wire the services together from the settings."""
    images = ImageLoader(settings)
    redis = connect(settings.redis)
    stores = StoreFactory(redis)
    metrics = Metrics(settings.metrics_dir)
    # A request waits for an identical one in flight at most as long as a backend may take.
    wait = max((b.connect_timeout + b.read_timeout for b in settings.backends), default=60.0)
    files = build_lasting_files(settings)  # one store, shared by the backends and GET /files
    router = Router(
        build_backends(settings, BackendTools(images, stores, files)),
        settings.routes,
        _health(settings, metrics),
    )
    for target in router.configured_targets():  # listed in /metrics before their first use
        metrics.route_target_open.labels(target.name).set(0)
        metrics.route_target_in_flight.labels(target.name).set(0)
    usage = build_ledger(settings.usage, metrics.usage_dropped, metrics.usage_written)
    return Gateway(
        settings=settings,
        router=router,
        keys=KeyStore(
            settings.api_keys,
            settings.access.keys,
            defaults=settings.access.limits,
            budgets=settings.access.budgets.defaults,
            source=settings.config_file,
        ),
        responses=_responses(settings, stores),
        metrics=metrics,
        cache=build_cache(_cache_limits(settings), redis, wait),
        redis=redis,
        gates=_gates(settings, metrics),
        status=BackendStatus(router, settings.status_cache_seconds),
        files=files,
        usage=usage,
        budgets=_budgets(settings, usage, metrics),
    )


def _budgets(settings: Settings, usage: Ledger | None, metrics: Metrics) -> BudgetBook | None:
    """The worker's budget book, told by the ledger what it queues and writes."""
    if usage is None:  # config.py refuses budgets without the ledger, their truth
        return None
    book = BudgetBook(usage.store.engine, settings.access.budgets, metrics.budget_refused)
    usage.watcher = book
    return book


def _health(settings: Settings, metrics: Metrics) -> Health:
    """Routing targets' circuits and requests in flight, reporting to the metrics."""

    def report(target: str, state: str, in_flight: int) -> None:
        metrics.route_target_open.labels(target).set(0 if state == CLOSED else 1)
        metrics.route_target_in_flight.labels(target).set(in_flight)

    routes = settings.routes
    return Health(routes.breaker_failures, routes.breaker_seconds, report)


def _responses(settings: Settings, stores: StoreFactory) -> ResponseStore:
    """Stored Responses, bounded in bytes per worker, per key and per conversation."""
    budget = Budget(settings.responses_max_bytes, settings.responses_max_bytes_per_key)
    store = stores.make("responses", settings.response_ttl, budget)
    return ResponseStore(store, settings.responses_max_conversation_bytes)


def _cache_limits(settings: Settings) -> CacheLimits:
    access = settings.access
    return CacheLimits(
        0.0 if access.cache_mode == "off" else access.cache_ttl,  # "off" is a TTL of 0
        access.cache_max_entries,
        access.cache_max_bytes,
        access.cache_max_entry_bytes,
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
