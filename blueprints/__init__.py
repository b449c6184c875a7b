"""HTTP in and out. Builds the /v1 blueprint tree and gives views the app's Gateway."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, current_app

from services.gateway import Gateway
from services.types import CallContext


def gateway() -> Gateway:
    """Return the Gateway built by create_app for this app."""
    return current_app.extensions["relay"]  # type: ignore[no-any-return]


def register_blueprints(app: Flask) -> None:
    from blueprints import (
        auth,
        chat,
        files,
        health,
        home,
        images,
        metrics,
        models,
        openapi,
        responses,
    )

    v1 = Blueprint("v1", __name__, url_prefix="/v1")
    v1.before_request(auth.require_api_key)
    _register_text_endpoints(app, v1)
    v1.register_blueprint(chat.bp)
    v1.register_blueprint(models.bp)
    v1.register_blueprint(responses.bp)
    v1.register_blueprint(images.bp)
    if app.extensions["relay"].router.passthrough_backend() is not None:
        from blueprints import passthrough

        v1.register_blueprint(passthrough.bp)
    app.register_blueprint(v1)
    # The path the Express Ollama service served; the same view, keys and limits (README).
    alias = Blueprint("api_alias", __name__, url_prefix="/api")
    alias.before_request(auth.require_api_key)
    alias.register_blueprint(chat.bp, name="api_chat")
    app.register_blueprint(alias)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(home.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(files.bp)


def call_context() -> CallContext:
    """Collect who is calling and the backend-specific headers they sent."""
    from flask import g, request

    from blueprints.files import public_base_url

    return CallContext(
        key_name=g.api_key.name,
        upstream_key=request.headers.get("X-Dify-Api-Key") or None,
        conversation_id=request.headers.get("X-Dify-Conversation-Id") or None,
        public_url=public_base_url(),
    )


def json_body() -> object:
    """Return the parsed JSON body; raise a 400 when it is missing or not JSON."""
    from blueprints.request_body import read_body
    from services.errors import InvalidRequestError

    data = read_body()  # size, deadline and per-key upload limits (request_body.py)
    if not data:
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        # Strict JSON: NaN and Infinity would otherwise pass through to backends (a 502) or
        # back to the client as invalid JSON, and a body nested past the parser's recursion
        # limit must be a 400, not a 500 (both found by tests/test_fuzz_*.py).
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        body = None
    if body is None:
        raise InvalidRequestError("The request body is not valid JSON.")
    if _nested_deeper_than(body, MAX_JSON_DEPTH):
        # Re-encoding it for a backend, or echoing it, would overflow the stack (a 500).
        raise InvalidRequestError(
            f"The request body is nested deeper than {MAX_JSON_DEPTH} levels."
        )
    return body


MAX_JSON_DEPTH = 128  # far beyond any real request, far below Python's recursion limit


def _nested_deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _register_text_endpoints(app: Flask, v1: Blueprint) -> None:
    """Add /v1/completions and /v1/embeddings, and CORS when origins are configured."""
    from blueprints import completions, cors, embeddings

    v1.register_blueprint(completions.bp)
    v1.register_blueprint(embeddings.bp)
    cors.register_cors(app, app.extensions["relay"].settings.cors_origins)
