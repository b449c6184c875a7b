"""GET /admin: the operator dashboard, and GET /admin/dashboard.json, the numbers it draws
(docs/operations.md "Dashboard").

The page itself is a shell with no data in it (HTML, a script and styles served from here, the
vendored chart library under static/): anyone may load it. Its data comes only from
/admin/dashboard.json, guarded like /metrics (allowed addresses or the admin token, which the
page sends as a header); the check comes before anything is read. A strict Content Security
Policy keeps the page to its own files: no inline script, no other origin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request

from blueprints.context import gateway
from blueprints.metrics import admin_allowed
from services.core.errors import PermissionDeniedError
from services.usage import dashboard

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@bp.get("")
def page() -> Response:
    response = Response(render_template("dashboard.html"), content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/dashboard.json")
def data() -> Response:
    # Fail closed: the check comes before anything else is read or said.
    if not admin_allowed():
        raise PermissionDeniedError(
            "The dashboard's data is served only to allowed addresses or with the admin token.",
            code="admin_forbidden",
        )
    period = dashboard.parse_period(request.args)
    gw = gateway()
    now = datetime.now(UTC).replace(tzinfo=None)
    body: dict[str, Any] = {"object": "dashboard", "generated_at": now.isoformat() + "Z"}
    if gw.usage is None:
        body |= {"usage": "off", "period": period.name}
    else:
        body |= {"usage": "on", **dashboard.summary(gw.usage.store.engine, period, now)}
    body["backends"] = _backends()
    # Each budget of each key and what it has used (docs/operations.md "Dashboard").
    body["budgets"] = _budgets()
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _budgets() -> list[dict[str, Any]]:
    """One row per budget of a key: its limit, what it spent and has left, when it resets."""
    gw = gateway()
    book = gw.budgets
    if book is None:
        return []
    return [
        {"key": key.name, "budget": name, **entry}
        for key in gw.keys.all()
        if key.budgets.any
        for name, entry in book.status(key.name, key.budgets).items()
    ]


def _backends() -> list[dict[str, Any]]:
    """Each backend's state as /ready has it (cached), with its models and load."""
    gw = gateway()
    hosts = {b.name: b.hosts.report() for b in gw.router.backends}
    return [
        {
            "name": s.name,
            **s.health(),
            "models": list(s.models),
            **gw.gates.report(s.name),
            "hosts": hosts.get(s.name, []),
        }
        for s in gw.status.states()
    ]
