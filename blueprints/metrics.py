"""GET /metrics (Prometheus text), for allowed addresses or the admin token; recording helpers."""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Blueprint, Response, request

from blueprints.access_record import AccessRecord
from blueprints.context import gateway
from blueprints.credentials import admin_token_presented
from services.common.metrics import Metrics
from services.core.errors import PermissionDeniedError
from services.core.types import Usage

bp = Blueprint("metrics", __name__)

# Status codes that mean the backend failed, named as in the relay_upstream_errors metric.
UPSTREAM_KINDS = {502: "bad_reply", 503: "unavailable", 504: "timeout"}


def admin_allowed() -> bool:
    """The admin pages' check (/metrics, /admin/usage): an allowed address or the admin token."""
    settings = gateway().settings
    allowed = _address_allowed(request.remote_addr or "", settings.metrics_allow)
    return allowed or admin_token_presented()


@bp.get("/metrics")
def metrics() -> Response:
    if not admin_allowed():
        raise PermissionDeniedError(
            "Metrics are served only to allowed addresses or with the admin token.",
            code="metrics_forbidden",
        )
    body, content_type = gateway().metrics.render()
    return Response(body, content_type=content_type)


def record_request(
    metrics: Metrics,
    line: dict[str, Any],
    fields: AccessRecord,
    seconds: float,
    usage: Usage | None,
    first_token: float | None,
) -> None:
    """Count one finished request in every metric it touches."""
    route, key = line["route"], line["key"]
    backend = fields.backend or "-"
    model = _model_label(metrics, line["status"], fields)
    metrics.bound(metrics.requests, route, model, backend, str(line["status"]), key).inc()
    stream = "yes" if fields.stream else "no"
    metrics.bound(metrics.latency, route, backend, stream).observe(seconds)
    if first_token is not None:
        metrics.bound(metrics.first_token, route, backend).observe(first_token)
    if usage is not None:
        metrics.bound(metrics.tokens, "in", model, backend, key).inc(usage.prompt_tokens)
        metrics.bound(metrics.tokens, "out", model, backend, key).inc(usage.completion_tokens)
        if usage.estimated:
            metrics.tokens_estimated.labels("in", backend).inc(usage.prompt_tokens)
            metrics.tokens_estimated.labels("out", backend).inc(usage.completion_tokens)
    if line["status"] in UPSTREAM_KINDS and backend != "-":
        metrics.upstream_errors.labels(backend, UPSTREAM_KINDS[line["status"]]).inc()
    if fields.limited:
        metrics.rate_limited.labels(key, fields.limited).inc()
    if fields.cache:
        metrics.cache.labels(fields.cache.lower()).inc()
    stats = fields.stats
    if stats is not None and stats.error:
        metrics.upstream_errors.labels(backend, "midstream").inc()


def _model_label(metrics: Metrics, status: int, fields: AccessRecord) -> str:
    # A name is a label only when a backend took the request: the router resolved it and the
    # key was allowed (then `backend` is set). A 404 is a name nobody serves; a pass-through
    # body's model was never routed (`routed` False): `other`. No model ("-") stays as it is.
    model = fields.model or "-"
    if model == "-":
        return model
    routed = fields.backend is not None and status != 404 and fields.routed
    # A new name takes one of the bounded places only once it was answered: a backend that
    # takes any name (a glob route) cannot have them used up by failing made-up ones.
    return metrics.model_label(str(model), routed, answered=status < 400)


def _address_allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n) for n in networks)
