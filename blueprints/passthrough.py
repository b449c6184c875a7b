"""Any other /v1 path (audio, moderations, files, ...) goes to an OpenAI-compatible upstream.

Registered only when a backend has `passthrough = true`; still behind Relay's keys and limits.
The path is forwarded exactly as checked (services/operations/passthrough_paths.py), a JSON
body's model is held to the key's model list, and no Relay key ever goes upstream.
"""

from __future__ import annotations

import io
import re
from typing import IO

from flask import Blueprint, Response, g, request

from blueprints.access_record import access
from blueprints.context import gateway
from blueprints.request_body import body_stream
from services.core import pipeline
from services.core.errors import InvalidRequestError
from services.operations.passthrough_body import check_json, is_json, looks_like_json, read_bounded
from services.operations.passthrough_paths import checked_path

bp = Blueprint("passthrough", __name__)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

# A query string goes on as it came; it must still be one that needs no re-encoding.
_QUERY = re.compile(r"[A-Za-z0-9._~:@+,=&%!$'()*;/?-]*")


@bp.route("/<path:rest>", methods=METHODS)
def forward(rest: str) -> Response:
    gw = gateway()
    backend = gw.router.passthrough_backend()
    path = "/" + checked_path(request.environ, backend.passthrough_paths)
    query = str(request.environ.get("QUERY_STRING", ""))
    if not _QUERY.fullmatch(query):
        raise InvalidRequestError("The query string has characters that must be escaped.")
    if query:
        path += "?" + query
    body, length, model = _body()
    pipeline.check_budgets(gw, g.api_key, g.get("request_id") or "-")
    status, headers, reply = backend.forward(
        request.method, path, request.headers, body, length, _callers_own_auth()
    )
    # The body's model is logged, but is no metrics label: the router did not pick it, so any
    # made-up name would take one of the bounded label places (blueprints/metrics.py).
    record = access()
    record.backend, record.model, record.stream, record.routed = (
        backend.name,
        model or "-",
        True,
        False,
    )
    return Response(reply, status=status, headers=headers)


def _body() -> tuple[IO[bytes] | None, int | None, str | None]:
    """The body to forward, its length, and the model a JSON body names.

    Multipart uploads (audio, files) stream on unread. Any other body is read whole, within
    RELAY_MAX_BODY_BYTES, and checked when it is JSON or looks like it: some upstreams decode
    JSON whatever the Content-Type says, so the type alone cannot exempt a body.
    """
    if not (request.content_length or request.headers.get("Transfer-Encoding")):
        return None, None, None
    stream = body_stream()  # size, deadline and per-key upload limits (request_body.py)
    content_type = request.headers.get("Content-Type") or ""
    if content_type.split(";", 1)[0].strip().lower().startswith("multipart/"):
        return stream, request.content_length, None
    data = read_bounded(stream, gateway().settings.max_body_bytes)
    model = None
    if not content_type or is_json(content_type) or looks_like_json(data):
        model = check_json(data, g.api_key)
    return io.BytesIO(data), len(data), model


def _callers_own_auth() -> str | None:
    """The caller's Authorization, unless any part of it is a Relay key (of anyone)."""
    value = request.headers.get("Authorization")
    if not value:
        return None
    # The whole value, the token after the scheme, and each piece of a list (two headers
    # joined by the server): a Relay key in any of them keeps the header back.
    candidates = {value.strip(), value.strip().partition(" ")[2].strip()}
    candidates.update(re.split(r"[\s,]+", value))
    keys = gateway().keys
    if any(keys.is_relay_key(part) for part in candidates if part):
        return None
    return value
