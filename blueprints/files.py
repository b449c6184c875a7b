"""GET /files/<name>: the lasting copies of files backends returned. No key: Markdown renderers
load these links on their own. Only names Relay made are served, with headers that keep a
browser from treating them as anything but the kept type.
"""

from __future__ import annotations

from flask import Blueprint, Response, send_file

from blueprints.context import gateway
from services.core.errors import NotFoundError
from services.state.file_store import LastingFiles

bp = Blueprint("files", __name__)
ONE_YEAR = 365 * 24 * 3600


def lasting_files() -> LastingFiles | None:
    return gateway().files


@bp.get("/files/<name>")
def retrieve_file(name: str) -> Response:
    files = lasting_files()
    found = files.open(name) if files is not None else None
    if found is None:
        raise NotFoundError("No file by that name.", code="file_not_found")
    if found.path is not None:
        resp = send_file(found.path, mimetype=found.media_type, conditional=True, etag=True)
    else:
        resp = Response(found.data, mimetype=found.media_type)
    disposition = "inline" if found.inline else "attachment"
    resp.headers["Content-Disposition"] = f'{disposition}; filename="{found.name}"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    if found.media_type != "application/pdf":  # browsers' PDF viewers refuse to run sandboxed
        resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cross-Origin-Resource-Policy"] = "cross-origin"  # chat UIs embed these
    return resp
