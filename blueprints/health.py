"""GET /health (liveness, no upstream call) and GET /ready (every backend answers). No auth."""

from __future__ import annotations

from flask import Blueprint

from blueprints import gateway

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/ready")
def ready() -> tuple[dict[str, object], int]:
    gw = gateway()
    report: dict[str, dict[str, object]] = {
        name: {**state, **gw.gates.report(name)} for name, state in gw.router.check_all().items()
    }
    for backend in gw.router.backends:
        if len(backend.hosts.urls) > 1:
            report[backend.name]["hosts"] = backend.hosts.report()
    ok = all(b["status"] == "ok" for b in report.values())
    return {"status": "ok" if ok else "unavailable", "backends": report}, 200 if ok else 503
