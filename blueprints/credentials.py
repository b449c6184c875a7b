"""Credentials on the routes outside /v1: the admin token, or an API key shown to a page."""

from __future__ import annotations

import hmac

from flask import request

from blueprints.auth import presented_secret
from blueprints.context import gateway
from services.access.keys import ApiKey
from services.core.errors import AuthenticationError


def admin_token_presented() -> bool:
    """True when the request carries RELAY_METRICS_TOKEN as its Bearer token."""
    expected = gateway().settings.metrics_token
    if not expected:
        return False
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    # Bytes, not str: compare_digest refuses str with non-ASCII characters (it raised, a 500),
    # and a header may carry any byte. WSGI hands header bytes over as latin-1 text, so this
    # gets the sent bytes back; the token is compared as UTF-8, as an operator would type it.
    try:
        sent = presented.encode("latin-1")
    except UnicodeEncodeError:  # not header bytes at all: nothing to match
        return False
    return hmac.compare_digest(sent, expected.encode("utf-8", "surrogateescape"))


def key_presented() -> ApiKey | None:
    """The valid API key this request carries (any caller when the gateway is open), or None."""
    try:
        return gateway().keys.authenticate(presented_secret())
    except AuthenticationError:
        return None
