"""GET / — what this gateway is: version, endpoints, backends with their health, models.

JSON for programs, a small HTML page for a person in a browser (chosen by the Accept header).
No auth and no secrets: addresses of backends and keys are never shown.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request

from blueprints import gateway
from services.service_info import describe

bp = Blueprint("home", __name__, template_folder="templates")


@bp.get("/")
def service_info() -> Response | str:
    info = describe(gateway())
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return render_template("home.html", info=info)
    return jsonify(info)
