"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from blueprints.streaming import stream_reply
from services.core import pipeline
from services.core.pipeline import Streamed
from services.core.types import ChatDelta, StreamStats
from services.faces.completions import (
    parse_completion_request,
    render_completion,
    render_completion_stream,
    total_usage,
)
from services.operations import completions

bp = Blueprint("completions", __name__)


@bp.post("/completions")
def create_completion() -> Response:
    req, gw, record = parse_completion_request(json_body()), gateway(), access()
    record.model, record.stream = req.model, req.stream
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    if req.stream:

        def frames(deltas: Iterator[tuple[int, ChatDelta]], stats: StreamStats) -> Iterator[bytes]:
            return render_completion_stream(deltas, req, stats)

        def opened(stats: StreamStats) -> Streamed[bytes]:
            out = completions.stream(gw, call, req)
            return out.framed(frames(out.deltas, stats))

        return stream_reply(record, call, opened, frames, gw.settings.keepalive_seconds)
    out = completions.complete(gw, call, req)
    record.took(out.backend, out.cache, total_usage(out.result), route=out.route)
    response = jsonify(render_completion(out.result, req))
    response.headers.update(out.headers)
    return response
