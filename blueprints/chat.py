"""POST /v1/chat/completions."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from blueprints import call_context, gateway, json_body
from blueprints.streaming import sse_response
from services import cached_chat
from services.openai_format import parse_chat_request
from services.openai_render import StreamStats, render_chat_completion, render_chat_stream

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    req = parse_chat_request(json_body())
    ctx = call_context()
    g.access.update(model=req.model, stream=req.stream)
    key, policy = g.api_key, g.cache_policy
    if req.stream:
        backend, deltas, g.cache_status = cached_chat.stream(gateway(), req, ctx, key, policy)
        stats = g.access["stats"] = StreamStats()
        g.access.update(backend=backend.name, cache=g.cache_status)
        response = sse_response(render_chat_stream(deltas, req.model, req.include_usage, stats))
    else:
        backend, result, g.cache_status = cached_chat.complete(gateway(), req, ctx, key, policy)
        g.access.update(backend=backend.name, usage=result.usage, cache=g.cache_status)
        response = jsonify(render_chat_completion(result, req.model))
    response.headers.update(ctx.response_headers)
    return response
