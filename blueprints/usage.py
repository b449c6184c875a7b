"""Reading the usage ledger over HTTP: GET /admin/usage and /admin/budgets (every key; allowed
addresses or the admin token, like /metrics) and GET /v1/usage (the calling key's own, with its
budgets). JSON, or CSV with `format=csv` or `Accept: text/csv` (docs/operations.md "Usage")."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from blueprints.context import gateway
from blueprints.metrics import admin_allowed
from services.core.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from services.usage import query
from services.usage.query import UsageQuery
from services.usage.store import UsageStore

admin_bp = Blueprint("usage_admin", __name__, url_prefix="/admin")
own_bp = Blueprint("usage_own", __name__)


@admin_bp.get("/usage")
def admin_summary() -> Response:
    store = _admin_store()
    return _summary(store, query.parse_query(request.args))


@admin_bp.get("/usage/records")
def admin_records() -> Response:
    store = _admin_store()
    return _records(store, query.parse_query(request.args, records=True))


@admin_bp.get("/budgets")
def admin_budgets() -> Response:
    """Every key that has a budget: its budgets, what it spent and has left, when each resets."""
    _admin_store()  # the check first; and the ledger is on, so the budgets are kept
    book = gateway().budgets
    keys = [k for k in gateway().keys.all() if k.budgets.any] if book is not None else []
    data = [
        {"key": k.name, "enabled": k.enabled, "budgets": book.status(k.name, k.budgets)}
        for k in keys
        if book is not None
    ]
    return _json({"object": "list", "data": data})


@own_bp.get("/usage")
def own_summary() -> Response:
    store = _store()
    q = query.parse_query(request.args, own=True)
    book = gateway().budgets
    budgets = book.status(g.api_key.name, g.api_key.budgets) if book is not None else {}
    return _summary(store, _own(q), {"budgets": budgets})


@own_bp.get("/usage/records")
def own_records() -> Response:
    store = _store()
    q = query.parse_query(request.args, records=True, own=True)
    return _records(store, _own(q))


def _own(q: UsageQuery) -> UsageQuery:
    return replace(q, key=g.api_key.name)  # the calling key's name, never another's


def _admin_store() -> UsageStore:
    # Fail closed: the check comes before anything else is read or said.
    if not admin_allowed():
        raise PermissionDeniedError(
            "Usage is served only to allowed addresses or with the admin token.",
            code="admin_forbidden",
        )
    return _store()


def _store() -> UsageStore:
    ledger = gateway().usage
    if ledger is None:
        raise NotFoundError("The usage ledger is off (RELAY_USAGE=off).", code="usage_off")
    return ledger.store


def _wants_csv() -> bool:
    fmt = request.args.get("format")
    if fmt is not None:
        if fmt not in ("json", "csv"):
            raise InvalidRequestError("format must be json or csv.", param="format")
        return fmt == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _summary(store: UsageStore, q: UsageQuery, extra: dict[str, Any] | None = None) -> Response:
    csv = _wants_csv()
    rows, more, source = query.summary(store.engine, q)
    if csv:
        return _csv(query.to_csv(rows, query.summary_columns(q.group_by)))
    return _json(
        {
            "object": "list",
            "group_by": list(q.group_by),
            "since": _bound(q.since),
            "until": _bound(q.until),
            "source": source,
            "data": rows,
            "has_more": more,
            **(extra or {}),
        }
    )


def _records(store: UsageStore, q: UsageQuery) -> Response:
    csv = _wants_csv()
    rows = query.records(store.engine, q)
    if csv:
        return _csv(query.to_csv(rows, query.RECORD_COLUMNS))
    return _json({"object": "list", "data": rows, "has_more": len(rows) >= q.limit})


def _bound(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat() + "Z"  # bounds are kept in UTC
    return value.isoformat() if value is not None else None


def _json(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _csv(text: str) -> Response:
    return Response(
        text,
        content_type="text/csv; charset=utf-8",
        headers={"Cache-Control": "no-store", "Content-Disposition": "inline; filename=usage.csv"},
    )
