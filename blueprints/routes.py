"""Build the route tree: the /v1 blueprints, /api (Ollama's native API and the chat alias), and
the unauthenticated pages."""

from __future__ import annotations

from flask import Blueprint, Flask

from blueprints import (
    anthropic,
    auth,
    chat,
    completions,
    cors,
    dashboard,
    embeddings,
    files,
    health,
    home,
    images,
    metrics,
    models,
    ollama,
    openapi,
    passthrough,
    responses,
    usage,
)


def register_blueprints(app: Flask) -> None:
    app.url_map.converters["model_id"] = models.ModelIdConverter
    v1 = Blueprint("v1", __name__, url_prefix="/v1")
    v1.before_request(auth.require_api_key)
    _register_text_endpoints(app, v1)
    v1.register_blueprint(chat.bp)
    v1.register_blueprint(anthropic.bp)
    v1.register_blueprint(models.bp)
    v1.register_blueprint(responses.bp)
    v1.register_blueprint(images.bp)
    v1.register_blueprint(usage.own_bp)  # GET /v1/usage: the calling key's own usage
    if app.extensions["relay"].router.passthrough_backend() is not None:
        v1.register_blueprint(passthrough.bp)
    app.register_blueprint(v1)
    # /api: Ollama's native API (docs/ollama.md), and beside it /api/chat/completions, the path
    # the Express Ollama service served: the same view, keys and limits as /v1
    # (docs/configuration.md "Migrating from other tools").
    api = Blueprint("api_alias", __name__, url_prefix="/api")
    api.before_request(auth.require_api_key)
    api.register_blueprint(chat.bp, name="api_chat")
    api.register_blueprint(ollama.bp)
    app.register_blueprint(api)
    app.register_blueprint(anthropic.probe)  # Claude Code's keyless probe, HEAD /api/hello
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(usage.admin_bp)  # GET /admin/usage, guarded like /metrics
    app.register_blueprint(dashboard.bp)  # GET /admin, the page; its data guarded like /metrics
    app.register_blueprint(home.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(files.bp)


def _register_text_endpoints(app: Flask, v1: Blueprint) -> None:
    """Add /v1/completions and /v1/embeddings, and CORS when origins are configured."""
    v1.register_blueprint(completions.bp)
    v1.register_blueprint(embeddings.bp)
    cors.register_cors(app, app.extensions["relay"].settings.cors_origins)
