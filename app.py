"""Application factory: config, logging, services, blueprints, error handlers. No routes here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from loguru import logger

import config
from blueprints.access_log import register_access_log
from blueprints.auth import register_identity
from blueprints.cache_control import register_cache_control
from blueprints.client_address import TrustedProxies
from blueprints.error_handlers import register_error_handlers
from blueprints.key_requests import register_key_requests
from blueprints.limits import register_limits
from blueprints.request_body import register_request_bodies
from blueprints.routes import register_blueprints
from blueprints.strict_json import StrictJSONProvider
from relay_keys import keys as keys_command
from relay_usage import usage as usage_command
from services.common.log_setup import configure_logging
from services.core.gateway import build_gateway


class SyncFlask(Flask):
    """Flask without its per-call check for `async def`: Relay has no async views or hooks
    (docs/design.md §3.2, tests/test_architecture.py), and the check ran ~15 times a request."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build a Relay app from the environment (and test overrides)."""
    settings = config.load()
    if overrides:
        settings = config.replace(settings, **overrides)
    configure_logging(settings)
    app = SyncFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = StrictJSONProvider(app)
    app.extensions["relay"] = build_gateway(settings)
    register_access_log(app)
    # Keys, limits and reply cache (issue 4). Order matters: the caller is identified before
    # flask-limiter counts the request, and the cache policy needs the caller's key.
    register_identity(app)
    register_limits(app)
    register_cache_control(app)
    register_request_bodies(app)  # after identify_caller: uploads are counted per key
    register_key_requests(app)  # after identify_caller: requests in flight, per key
    app.cli.add_command(keys_command)
    app.cli.add_command(usage_command)
    register_blueprints(app)
    register_error_handlers(app)
    app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    for backend in settings.backends:
        logger.info(
            "backend {} ({}) serves models {}",
            backend.name,
            backend.type,
            ", ".join(backend.models),
        )
    return app
