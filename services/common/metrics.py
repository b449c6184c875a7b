"""Prometheus metrics, correct with several gunicorn workers (prometheus-client multiprocess).

Under gunicorn, gunicorn.conf.py gives every worker one shared PROMETHEUS_MULTIPROC_DIR and
marks dead workers; values then live in files there and /metrics merges them. Without it
(development server, tests in one process) each app keeps its own registry.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# The model label is caller input: bound it so /metrics (and the multiprocess files) cannot be
# grown by sending made-up names. Real model names are far shorter, and a gateway serves far
# fewer; past either bound a name is counted as `other` (docs/operations.md "Metrics").
MAX_MODEL_LABELS = 100  # distinct model names per worker process
MAX_MODEL_LABEL_LENGTH = 128
OTHER_MODEL = "other"

M = TypeVar("M", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, multiprocess_dir: str | None) -> None:
        self.multiprocess = bool(multiprocess_dir)
        self._model_labels: set[str] = set()
        # Label children by metric and values: labels() validates and locks on every call. As
        # bounded as the metrics' own children (the model label is capped, keys are configured).
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        # In multiprocess mode metrics must not join a registry: values go to files.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "relay_requests",
            "Requests answered, by route, model, backend, status and key.",
            ["route", "model", "backend", "status", "key"],
            registry=registry,
        )
        self.latency = Histogram(
            "relay_request_duration_seconds",
            "Time to answer (for streams: to the end).",
            ["route", "backend", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "relay_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["route", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "relay_tokens",
            "Tokens in (prompt) and out (completion), by model, backend and key.",
            ["direction", "model", "backend", "key"],
            registry=registry,
        )
        self.tokens_estimated = Counter(
            "relay_tokens_estimated",
            "The part of relay_tokens Relay estimated because the upstream gave no usage.",
            ["direction", "backend"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "relay_upstream_errors",
            "Backend failures by kind (unavailable, timeout, bad_reply, midstream).",
            ["backend", "kind"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "relay_rate_limited",
            "Requests refused by a rate limit, by key and limit kind.",
            ["key", "kind"],
            registry=registry,
        )
        self.cache = Counter(
            "relay_cache",
            "Reply cache lookups by result (hit, miss, bypass).",
            ["result"],
            registry=registry,
        )
        self.backend_in_flight = Gauge(
            "relay_backend_in_flight",
            "Requests in flight to a backend with a limit.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.backend_queued = Gauge(
            "relay_backend_queued",
            "Requests waiting for a slot of a backend with a limit.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.usage_written = Counter(
            "relay_usage_written",
            "Usage records written to the ledger's database.",
            registry=registry,
        )
        self.usage_dropped = Counter(
            "relay_usage_dropped",
            "Usage records lost: the worker's queue was full, or the database failed.",
            ["reason"],
            registry=registry,
        )
        self.budget_refused = Counter(
            "relay_budget_refused",
            "Requests refused because a budget of the key was spent, by key and budget.",
            ["key", "budget"],
            registry=registry,
        )
        # Routing (docs/routing.md): targets are named by the operator's routing table only.
        self.route_fallbacks = Counter(
            "relay_route_fallbacks",
            "Requests moved on to the next target of a model group, by reason.",
            ["reason"],
            registry=registry,
        )
        self.route_circuit_opened = Counter(
            "relay_route_circuit_opened",
            "Times a group target's circuit opened (it is skipped for a back-off).",
            ["target"],
            registry=registry,
        )
        self.route_target_open = Gauge(
            "relay_route_target_open",
            "1 while a routing target's circuit is open or half-open in some worker, else 0.",
            ["target"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.route_target_in_flight = Gauge(
            "relay_route_target_in_flight",
            "Requests in flight to a routing target.",
            ["target"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.streams = Gauge(
            "relay_streams_in_flight",
            "Streams being sent right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def model_label(self, model: str, routed: bool, answered: bool = True) -> str:
        """The label for a requested model: its name only for requests a backend took, and a
        name not labelled yet only when the request was answered."""
        if not routed or not model or len(model) > MAX_MODEL_LABEL_LENGTH:
            return OTHER_MODEL
        if model not in self._model_labels:
            if not answered or len(self._model_labels) >= MAX_MODEL_LABELS:
                return OTHER_MODEL
            self._model_labels.add(model)
        return model

    def bound(self, metric: M, *labels: str) -> M:
        """The child of `metric` for these label values, made once per worker."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child  # type: ignore[return-value]

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text and its content type."""
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
