"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from blueprints.streaming import stream_reply
from services.core import pipeline
from services.core.pipeline import Streamed
from services.core.types import ChatDelta, StreamStats
from services.faces.chat_reply import render_chat_completion, render_chat_stream
from services.faces.chat_request import parse_chat_request
from services.operations import chat

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    req, gw, record = parse_chat_request(json_body()), gateway(), access()
    record.model, record.stream = req.model, req.stream
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    if req.stream:
        # `frames` outlives the start (it renders a late failure), so it keeps two fields,
        # not the request (docs/design.md §4.6).
        model, include_usage = req.model, req.include_usage

        def frames(deltas: Iterator[ChatDelta], stats: StreamStats) -> Iterator[bytes]:
            return render_chat_stream(deltas, model, include_usage, stats)

        def opened(stats: StreamStats) -> Streamed[bytes]:
            out = chat.stream(gw, call, req)
            return out.framed(frames(out.deltas, stats))

        return stream_reply(record, call, opened, frames, gw.settings.keepalive_seconds)
    out = chat.complete(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    response = jsonify(render_chat_completion(out.result, req.model))
    response.headers.update(out.headers)
    return response
