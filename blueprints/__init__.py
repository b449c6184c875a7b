"""HTTP in and out. Builds the /v1 blueprint tree and gives views the app's Gateway."""

from __future__ import annotations

import json
import math

from flask import Blueprint, Flask, current_app

from services.core.gateway import Gateway
from services.core.types import CallContext


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

    app.url_map.converters["model_id"] = models.ModelIdConverter
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
    # The path the Express Ollama service served; the same view, keys and limits
    # (docs/configuration.md "Migrating from other tools").
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
    from services.common.json_keys import check_top_level_keys
    from services.common.json_limits import MAX_JSON_DEPTH, nested_deeper_than
    from services.common.unicode_text import check_no_lone_surrogates
    from services.core.errors import InvalidRequestError

    data = read_body()  # size, deadline and per-key upload limits (request_body.py)
    if not data:
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        # Strict JSON: NaN and Infinity would otherwise pass through to backends (a 502) or
        # back to the client as invalid JSON, and a body nested past the parser's recursion
        # limit must be a 400, not a 500 (both found by tests/test_fuzz_*.py).
        body = json.loads(data, parse_constant=_reject_constant, parse_float=_float_or_overflow)
    except (ValueError, RecursionError):
        body = None
    if body is None:
        raise InvalidRequestError("The request body is not valid JSON.")
    check_no_lone_surrogates(body)  # "\ud800" is JSON but not text: no reply could echo it
    if isinstance(body, dict):
        check_top_level_keys(body)  # no field a case-insensitive upstream reads otherwise
    if nested_deeper_than(body):
        # Re-encoding it for a backend, or echoing it, would overflow the stack (a 500).
        raise InvalidRequestError(
            f"The request body is nested deeper than {MAX_JSON_DEPTH} levels."
        )
    overflow = _first_overflow(body)
    if overflow is not None:
        path, literal = overflow
        raise InvalidRequestError(
            f"{literal[:40]} is too large for a number (a 64-bit float); send a finite one.",
            param=path or None,
        )
    return body


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _Overflow:
    """A JSON number beyond float range (1e400), kept as text so the 400 can name its field.

    Read as a float it would be infinity, which reaches backends or comes back to the client
    as `Infinity`, and that is not JSON (docs/api.md "Errors").
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _float_or_overflow(literal: str) -> float | _Overflow:
    value = float(literal)
    return value if math.isfinite(value) else _Overflow(literal)


def _first_overflow(value: object) -> tuple[str, str] | None:
    """Return the OpenAI-style param path and text of the first out-of-range number."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Overflow):
            return path, item.literal
        if isinstance(item, dict):
            pairs = [(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()]
        elif isinstance(item, list):
            pairs = [(v, f"{path}[{i}]") for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(pairs))  # depth-first, in document order
    return None


def _register_text_endpoints(app: Flask, v1: Blueprint) -> None:
    """Add /v1/completions and /v1/embeddings, and CORS when origins are configured."""
    from blueprints import completions, cors, embeddings

    v1.register_blueprint(completions.bp)
    v1.register_blueprint(embeddings.bp)
    cors.register_cors(app, app.extensions["relay"].settings.cors_origins)
