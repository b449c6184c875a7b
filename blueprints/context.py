"""What every view shares: the app's Gateway, the call context, the checked JSON body, and the
URL the caller reached Relay at."""

from __future__ import annotations

import json
import math
import re

from flask import current_app, g, request

from blueprints.request_body import read_body
from services.common.json_keys import check_top_level_keys
from services.common.json_limits import MAX_JSON_DEPTH, may_nest_deeper_than, nested_deeper_than
from services.common.unicode_text import check_no_lone_surrogates, may_hold_surrogates
from services.core.errors import InvalidRequestError
from services.core.gateway import Gateway
from services.core.types import CallContext

HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def gateway() -> Gateway:
    """Return the Gateway built by create_app for this app."""
    return current_app.extensions["relay"]  # type: ignore[no-any-return]


def call_context() -> CallContext:
    """Collect who is calling and the backend-specific headers they sent."""
    return CallContext(
        key_name=g.api_key.name,
        upstream_key=request.headers.get("X-Dify-Api-Key") or None,
        conversation_id=request.headers.get("X-Dify-Conversation-Id") or None,
        public_url=public_base_url(),
        request_id=g.get("request_id") or "-",
    )


def json_body() -> object:
    """Return the parsed JSON body; raise a 400 when it is missing or not JSON."""
    data = read_body()  # size, deadline and per-key upload limits (request_body.py)
    if not data:
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    overflows: list[_Overflow] = []

    def number(literal: str) -> float | _Overflow:
        value = float(literal)
        if math.isfinite(value):
            return value
        overflows.append(_Overflow(literal))
        return overflows[-1]

    try:
        # Strict JSON: NaN and Infinity would otherwise pass through to backends (a 502) or
        # back to the client as invalid JSON, and a body nested past the parser's recursion
        # limit must be a 400, not a 500 (both found by tests/test_fuzz_*.py).
        body = json.loads(data, parse_constant=_reject_constant, parse_float=number)
    except (ValueError, RecursionError):
        body = None
    if body is None:
        raise InvalidRequestError("The request body is not valid JSON.")
    # Each walk below is skipped when the bytes already rule its finding out: walking a 78 KB
    # agent request three times cost five times its parse (docs/design.md §12).
    if may_hold_surrogates(data):
        check_no_lone_surrogates(body)  # "\ud800" is JSON but not text: no reply could echo it
    if isinstance(body, dict):
        check_top_level_keys(body)  # no field a case-insensitive upstream reads otherwise
    if may_nest_deeper_than(data) and nested_deeper_than(body):
        # Re-encoding it for a backend, or echoing it, would overflow the stack (a 500).
        raise InvalidRequestError(
            f"The request body is nested deeper than {MAX_JSON_DEPTH} levels."
        )
    overflow = _first_overflow(body) if overflows else None
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


def public_base_url() -> str:
    """Return RELAY_PUBLIC_URL, else the URL the caller reached Relay at, as a trusted proxy
    reports it. Host and X-Forwarded-Host are the client's to choose, so links that outlive
    the request (kept files) should come from RELAY_PUBLIC_URL (docs/backends.md "Files that
    last")."""
    configured = current_app.extensions["relay"].settings.public_url
    if configured:
        return str(configured)
    scheme, host = request.scheme, request.host
    if "relay.proxy_addr" in request.environ:  # came through a trusted proxy (client_address)
        scheme = _first(request.headers.get("X-Forwarded-Proto")) or scheme
        host = _first(request.headers.get("X-Forwarded-Host")) or host
    if scheme not in ("http", "https") or not HOST.fullmatch(host):
        return ""  # links stay relative rather than carry a malformed host
    return f"{scheme}://{host}{request.script_root}"


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()
