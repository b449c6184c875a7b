"""Anthropic's Messages API: POST /v1/messages, /v1/messages/count_tokens, the error envelope,
and Claude Code's HEAD /api/hello probe (docs/anthropic.md)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify, request

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from blueprints.streaming import stream_reply
from services.core import pipeline
from services.core.errors import GatewayError
from services.core.pipeline import Streamed
from services.core.types import ChatDelta, StreamStats, new_id
from services.core.usage_estimate import chat_prompt_tokens
from services.faces.anthropic_reply import PING, render_error, render_message, render_stream
from services.faces.anthropic_request import (
    estimate_input_tokens,
    parse_count_tokens_request,
    parse_messages_request,
)
from services.operations import chat

bp = Blueprint("anthropic", __name__)
probe = Blueprint("anthropic_probe", __name__)


def speaks_anthropic(path: str) -> bool:
    """This request belongs to the Anthropic face: its paths, or any client sending its header."""
    return (
        path.startswith("/v1/messages")
        or path == "/api/hello"
        or (path.startswith("/v1/") and "anthropic-version" in request.headers)
    )


def identified(response: Response) -> Response:
    """Anthropic's `request-id` header: the same id as X-Request-ID."""
    response.headers["request-id"] = g.get("request_id") or new_id("req_")
    return response


def render_anthropic_error(error: GatewayError) -> Response:
    response = jsonify(render_error(error))
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["retry-after"] = str(error.retry_after)
    if error.status in (401, 403):
        # Claude Code retries a 401 for minutes unless told not to (docs/anthropic.md "Errors").
        response.headers["x-should-retry"] = "false"
    return identified(response)


@bp.post("/messages")
def create_message() -> Response:
    gw, record = gateway(), access()
    req = parse_messages_request(json_body(), gw.settings.anthropic_keep_billing_block)
    record.model, record.stream = req.model, req.stream
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    if req.stream:
        estimate = chat_prompt_tokens(req)
        model = req.model  # `frames` outlives the start: not the request (docs/design.md §4.6)

        def frames(deltas: Iterator[ChatDelta], stats: StreamStats) -> Iterator[bytes]:
            return render_stream(deltas, model, estimate, stats)

        def opened(stats: StreamStats) -> Streamed[bytes]:
            out = chat.stream(gw, call, req)
            return out.framed(frames(out.deltas, stats))

        interval = gw.settings.keepalive_seconds
        return identified(stream_reply(record, call, opened, frames, interval, keepalive=PING))
    out = chat.complete(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    response = jsonify(render_message(out.result, req.model))
    response.headers.update(out.headers)
    return identified(response)


@bp.post("/messages/count_tokens")
def count_tokens() -> Response:
    """An estimate made locally (docs/anthropic.md "count_tokens"); no backend is called."""
    gw, record = gateway(), access()
    req = parse_count_tokens_request(json_body(), gw.settings.anthropic_keep_billing_block)
    record.model = req.model
    pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    return identified(jsonify({"input_tokens": estimate_input_tokens(req)}))


@probe.route("/api/hello", methods=["GET", "HEAD"])
def hello() -> Response:
    """Claude Code's connectivity probe, sent without a key: an empty 200 that reveals nothing."""
    return identified(Response(b"", status=200))
