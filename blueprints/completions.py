"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from blueprints import call_context, gateway, json_body
from blueprints.streaming import sse_response
from services import completions
from services.completions_format import (
    parse_completion_request,
    render_completion,
    render_completion_stream,
    total_usage,
)
from services.openai_render import StreamStats

bp = Blueprint("completions", __name__)


@bp.post("/completions")
def create_completion() -> Response:
    req = parse_completion_request(json_body())
    ctx = call_context()
    g.access.update(model=req.model, stream=req.stream)
    if req.stream:
        backend, deltas = completions.stream(gateway(), req, ctx, g.api_key)
        stats = g.access["stats"] = StreamStats()
        g.access["backend"] = backend.name
        response = sse_response(render_completion_stream(deltas, req, stats))
    else:
        backend, results, g.cache_status = completions.complete(
            gateway(), req, ctx, g.api_key, g.cache_policy
        )
        g.access.update(backend=backend.name, usage=total_usage(results), cache=g.cache_status)
        response = jsonify(render_completion(results, req))
    response.headers.update(ctx.response_headers)
    return response
