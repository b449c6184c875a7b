"""Bearer-key check for every /v1 route; the key's name (never the key) goes on `g`."""

from __future__ import annotations

from flask import Flask, g, request

from blueprints.context import gateway
from services.access.ratelimit import API_PREFIXES
from services.core.errors import AuthenticationError

ANTHROPIC_KEY_PREFIX = "sk-ant-"  # how Anthropic's own API keys begin


def require_api_key() -> None:
    # identify_caller has already looked the key up (the limiter needed to know who calls).
    if "auth_error" in g:
        raise g.auth_error
    if "api_key" not in g:
        g.api_key = gateway().keys.authenticate(presented_secret())


def presented_secret() -> str | None:
    """The key a request presents in X-Api-Key or as its Bearer token, if any."""
    # X-Api-Key first: a caller who brings its own upstream key in Authorization (pass-through
    # in caller mode) gives Relay's key there.
    explicit = request.headers.get("X-Api-Key")
    if explicit:
        g.key_in_authorization = False
        return explicit
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    g.key_in_authorization = scheme.lower() == "bearer" and bool(token.strip())
    return token.strip() if g.key_in_authorization else None


def identify_caller() -> None:
    """Look up the key of a /v1 request before the limiter counts it; raise nothing yet."""
    if not request.path.startswith(API_PREFIXES):
        return
    try:
        g.api_key = gateway().keys.authenticate(presented_secret())
    except AuthenticationError as e:
        g.auth_error = e
        second = _anthropic_bearer()
        if second is not None:
            try:
                g.api_key = gateway().keys.authenticate(second)
            except AuthenticationError:
                g.secrets_tried = 2  # the limiter counts both guesses (ratelimit.py)
                return
            g.key_in_authorization = True
            del g.auth_error


def _anthropic_bearer() -> str | None:
    """An Anthropic client's Bearer token when its x-api-key failed: Claude Code and the SDKs
    send both when both variables are set, and a stale Anthropic key must not lock the user
    out (docs/anthropic.md "Keys").

    Only a key of Anthropic's own form (`sk-ant-`) falls back: beside any other x-api-key a
    valid Bearer key let its holder guess other keys at its own budget, not the address's few
    unauthenticated tries (docs/threat-model.md "The Ollama and Anthropic faces")."""
    if "anthropic-version" not in request.headers and not request.path.startswith("/v1/messages"):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    explicit = request.headers.get("X-Api-Key")
    if not explicit or not explicit.startswith(ANTHROPIC_KEY_PREFIX):
        return None
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def register_identity(app: Flask) -> None:
    # App-level, so it runs before flask-limiter's own check (registered after it).
    app.before_request(identify_caller)
