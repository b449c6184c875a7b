"""GET /files/<name>: the lasting copies of files backends returned. No key: Markdown renderers
load these links on their own. Only names Relay made are served, with headers that keep a
browser from treating them as anything but the kept type.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, request, send_file

from blueprints import gateway
from services.core.errors import NotFoundError
from services.state.file_store import LastingFiles

bp = Blueprint("files", __name__)
ONE_YEAR = 365 * 24 * 3600
HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


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


def public_base_url() -> str:
    """Return RELAY_PUBLIC_URL, else the URL the caller reached Relay at, as a trusted proxy
    reports it. Host and X-Forwarded-Host are the client's to choose, so links that outlive
    the request (kept files) should come from RELAY_PUBLIC_URL (docs/backends.md "Files that
    last")."""
    configured = current_app.extensions["relay"].settings.public_url
    if configured:
        return str(configured)
    scheme, host = request.scheme, request.host
    if "relay.proxy_addr" in request.environ:  # came through a trusted proxy (client_address)
        scheme = _first(request.headers.get("X-Forwarded-Proto")) or scheme
        host = _first(request.headers.get("X-Forwarded-Host")) or host
    if scheme not in ("http", "https") or not HOST.fullmatch(host):
        return ""  # links stay relative rather than carry a malformed host
    return f"{scheme}://{host}{request.script_root}"


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()
