"""Every error, ours or Flask's, leaves in the envelope of the face the caller speaks.

The face is chosen by path (`_FACES`): OpenAI's envelope unless a face claims the path.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from loguru import logger
from werkzeug.exceptions import HTTPException

from blueprints.access_record import access
from blueprints.anthropic import render_anthropic_error, speaks_anthropic
from services.core.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
)
from services.faces.ollama_reply import render_error as render_ollama
from services.usage.budgets import BudgetExceededError


def render_openai_error(error: GatewayError) -> Response:
    response = jsonify(error.to_dict())
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


Renderer = Callable[[GatewayError], Response]


def render_ollama_error(error: GatewayError) -> Response:
    """Ollama's envelope, `{"error": "<text>"}`, with the same statuses (docs/ollama.md)."""
    response = jsonify(render_ollama(error))
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _ollama_path(path: str) -> bool:
    # /api/chat/completions is the OpenAI alias and keeps OpenAI's envelope.
    return path.startswith("/api/") and not path.startswith("/api/chat/completions")


# (does this path belong to the face?, its error renderer); the first match wins.
# Anthropic's first: its keyless probe, /api/hello, is below Ollama's /api prefix.
_FACES: tuple[tuple[Callable[[str], bool], Renderer], ...] = (
    (speaks_anthropic, render_anthropic_error),
    (_ollama_path, render_ollama_error),
)


def render_error(error: GatewayError) -> Response:
    """Render an error in the envelope of the face this request's path belongs to."""
    record = g.get("access")
    if record is not None:  # for the usage ledger
        record.error_type, record.error_code = error.type, error.code
    path = request.path
    render = next((r for belongs, r in _FACES if belongs(path)), render_openai_error)
    response = render(error)
    if isinstance(error, BudgetExceededError):
        # Nothing changes before the reset: the SDKs read this header and do not retry
        # (docs/access.md "Budgets").
        response.headers["x-should-retry"] = "false"
    return response


def _from_http(e: HTTPException) -> GatewayError:
    status = e.code or 500
    if status == 404:
        return NotFoundError(f"Unknown path: {request.method} {request.path}")
    if status == 405:
        return MethodNotAllowedError(f"Method {request.method} is not allowed on {request.path}.")
    if status == 413:
        return RequestTooLargeError("The request body is larger than this gateway accepts.")
    if status == 429:
        return RateLimitError(e.description or "Rate limit exceeded.")
    if 400 <= status < 500:
        return InvalidRequestError(e.description or "Bad request.")
    return GatewayError("Relay could not handle the request.")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GatewayError)
    def gateway_error(e: GatewayError) -> Response:
        if "access" in g:
            record = access()
            if e.backend:
                record.backend = record.backend or e.backend
            elif e.status == 429:  # Relay's own limit, not a backend's
                record.limited = e.type
        return render_error(e)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        return render_error(_from_http(e))

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception) -> Response:
        logger.opt(exception=e).error("unhandled error on {} {}", request.method, request.path)
        return render_error(GatewayError("Relay failed to handle the request."))
