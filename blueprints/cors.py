"""CORS for browser front ends, off unless RELAY_CORS_ORIGINS lists origins.

Preflights (OPTIONS with Access-Control-Request-Method) for /v1/* are answered here, before the
key check, since browsers send them without credentials. Every response to an allowed origin
carries Access-Control-Allow-Origin; other origins get no CORS headers at all, so browsers block
them. The origin is echoed rather than `*`, so the answer is also valid for credentialed calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "X-Api-Key",
    "X-Dify-Api-Key",
    "X-Dify-Conversation-Id",
)
EXPOSE_HEADERS = ", ".join(
    (
        "X-Request-ID",
        "X-Dify-Conversation-Id",
        "X-Relay-Route",  # the target that answered (docs/routing.md)
        "Retry-After",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
)
MAX_AGE = "600"  # seconds a browser may reuse a preflight answer (Chromium caps it at 7200)


def register_cors(app: Flask, origins: Iterable[str]) -> None:
    """Answer preflights and add CORS headers for the allowed origins; nothing when none."""
    allowed = {o.lower() for o in origins}
    if not allowed:
        return

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin", "")
        return origin if origin and ("*" in allowed or origin.lower() in allowed) else None

    def preflight() -> Response | None:
        if (
            request.method != "OPTIONS"
            or "Access-Control-Request-Method" not in request.headers
            or not request.path.startswith("/v1/")
            or allowed_origin() is None
        ):
            return None
        # Headers beyond our own list (the JS SDK's x-stainless-*) are granted as asked:
        # the origin is trusted, and the key check still applies to the real request.
        asked = request.headers.get("Access-Control-Request-Headers", "")
        known = {h.lower() for h in ALLOW_HEADERS}
        extra = [
            h.strip() for h in asked.split(",") if h.strip() and h.strip().lower() not in known
        ]
        response = Response(status=204)
        response.headers.update(
            {
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ", ".join((*ALLOW_HEADERS, *extra)),
                "Access-Control-Max-Age": MAX_AGE,
            }
        )
        return response

    def add_headers(response: Response) -> Response:
        response.vary.add("Origin")
        origin = allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            if request.method != "OPTIONS":
                response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    app.before_request(preflight)
    app.after_request(add_headers)
