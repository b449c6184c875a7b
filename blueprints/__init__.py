"""HTTP in and out. Builds the /v1 blueprint tree and gives views the app's Gateway."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from services.gateway import Gateway
from services.types import CallContext


def gateway() -> Gateway:
    """Return the Gateway built by create_app for this app."""
    return current_app.extensions["relay"]  # type: ignore[no-any-return]


def register_blueprints(app: Flask) -> None:
    from blueprints import auth, chat, files, health, home, images, metrics, models, responses

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
    from flask import request

    from services.errors import InvalidRequestError

    if not request.get_data(cache=True):
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidRequestError("The request body is not valid JSON.")
    return body


def _register_text_endpoints(app: Flask, v1: Blueprint) -> None:
    """Add /v1/completions and /v1/embeddings, and CORS when origins are configured."""
    from blueprints import completions, cors, embeddings

    v1.register_blueprint(completions.bp)
    v1.register_blueprint(embeddings.bp)
    cors.register_cors(app, app.extensions["relay"].settings.cors_origins)
