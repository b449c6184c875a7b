"""GET / — what this gateway is: version, endpoints, backends with their health, models.

JSON for programs, a small HTML page for a person in a browser (chosen by the Accept header).
No auth needed, so it shows little without credentials: models only to a valid key (those it
may use) or the admin token; host addresses only to the admin token; keys never. Backend
states come from a short-lived cache and loads are limited per address (docs/api.md "Service page").
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request

from blueprints.context import gateway
from blueprints.credentials import admin_token_presented, key_presented
from blueprints.status_limit import limit_status_page
from services.core.service_info import describe

bp = Blueprint("home", __name__, template_folder="templates")
bp.before_request(limit_status_page)


@bp.get("/")
def service_info() -> Response | str:
    gw = gateway()
    admin = admin_token_presented()
    info = describe(
        gw.status.states(),
        viewer=None if admin else key_presented(),
        admin=admin,
        passthrough=gw.router.passthrough_backend() is not None,
        hosts={b.name: b.hosts.report() for b in gw.router.backends} if admin else {},
    )
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return render_template("home.html", info=info)
    return jsonify(info)
