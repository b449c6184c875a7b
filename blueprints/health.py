"""GET /health (liveness, no upstream call) and GET /ready (every backend answers). No auth.

/ready reads the backends' states from the short-lived cache shared with `/`, and is limited
per address; host addresses are shown only with the admin token (docs/api.md "Service page").
"""

from __future__ import annotations

from flask import Blueprint

from blueprints.context import gateway
from blueprints.credentials import admin_token_presented
from blueprints.status_limit import limit_status_page

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/ready")
def ready() -> tuple[dict[str, object], int]:
    limit_status_page()
    gw = gateway()
    report: dict[str, dict[str, object]] = {
        s.name: {**s.health(), **gw.gates.report(s.name)} for s in gw.status.states()
    }
    admin = admin_token_presented()
    for backend in gw.router.backends:
        if len(backend.hosts.urls) > 1:
            hosts = backend.hosts.report()
            # Without the token: each host's state in order, not where it is.
            report[backend.name]["hosts"] = (
                hosts if admin else [{"state": h["state"]} for h in hosts]
            )
    ok = all(b["status"] == "ok" for b in report.values())
    body: dict[str, object] = {"status": "ok" if ok else "unavailable", "backends": report}
    targets = gw.router.configured_targets()
    if targets:
        # Each routing target's circuit, this worker's view (docs/routing.md "Health"); which
        # model on which backend only with the token.
        routes = gw.router.health.report_all(targets)
        body["routes"] = routes if admin else [{"state": r["state"]} for r in routes]
    return body, 200 if ok else 503
