"""Any other /v1 path (audio, moderations, files, ...) goes to an OpenAI-compatible upstream.

Registered only when a backend has `passthrough = true`; still behind Relay's keys and limits.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from blueprints import gateway
from blueprints.request_body import body_stream

bp = Blueprint("passthrough", __name__)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/<path:rest>", methods=METHODS)
def forward(rest: str) -> Response:
    backend = gateway().router.passthrough_backend()
    # The caller's Authorization is its own upstream key, unless it carried Relay's key.
    relay_key_there = g.get("key_in_authorization") and not gateway().keys.open
    caller_auth = None if relay_key_there else request.headers.get("Authorization")
    path = "/" + rest + (f"?{request.query_string.decode()}" if request.query_string else "")
    has_body = request.content_length or request.headers.get("Transfer-Encoding")
    status, headers, body = backend.forward(
        request.method,
        path,
        request.headers,
        body_stream() if has_body else None,  # size, deadline and upload limits
        request.content_length,
        caller_auth,
    )
    g.access.update(backend=backend.name, model="-", stream=True)
    return Response(body, status=status, headers=headers)
