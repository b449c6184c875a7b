"""GET /openapi.json: the OpenAPI 3.1 description of Relay's HTTP API. No auth, no secrets.

The document is a static file next to this module (blueprints/openapi.json), kept by hand and
checked against the running gateway by tests/test_fuzz_api.py.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)

DOCUMENT = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(DOCUMENT.read_bytes(), content_type="application/json")
