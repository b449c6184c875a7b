"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from blueprints import call_context, gateway, json_body
from blueprints.streaming import failing, sse_response, start_stream
from services import completions
from services.completions_format import (
    parse_completion_request,
    render_completion,
    render_completion_stream,
    total_usage,
)
from services.errors import GatewayError
from services.openai_render import StreamStats

bp = Blueprint("completions", __name__)


@bp.post("/completions")
def create_completion() -> Response:
    req = parse_completion_request(json_body())
    ctx = call_context()
    g.access.update(model=req.model, stream=req.stream)
    if req.stream:
        gw, key = gateway(), g.api_key  # captured: start() may run outside this request
        stats = g.access["stats"] = StreamStats()

        def start() -> tuple[str, Iterator[bytes]]:
            backend, deltas = completions.stream(gw, req, ctx, key)
            return backend.name, render_completion_stream(deltas, req, stats)

        def fail(e: GatewayError) -> Iterator[bytes]:
            return render_completion_stream(failing(e), req, stats)

        name, frames = start_stream(start, fail, gw.settings.keepalive_seconds)
        g.access["backend"] = name or gw.router.resolve(req.model, ctx).name
        response = sse_response(frames)
    else:
        backend, results, g.cache_status = completions.complete(
            gateway(), req, ctx, g.api_key, g.cache_policy
        )
        g.access.update(backend=backend.name, usage=total_usage(results), cache=g.cache_status)
        response = jsonify(render_completion(results, req))
    response.headers.update(ctx.response_headers)
    return response
