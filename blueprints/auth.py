"""Bearer-key check for every /v1 route; the key's name (never the key) goes on `g`."""

from __future__ import annotations

from flask import g, request

from blueprints import gateway


def require_api_key() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else None
    secret = secret or request.headers.get("X-Api-Key") or None
    g.api_key = gateway().keys.authenticate(secret)
