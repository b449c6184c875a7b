"""POST /v1/chat/completions."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from blueprints import call_context, gateway, json_body
from blueprints.streaming import failing, sse_response, start_stream
from services import cached_chat
from services.errors import GatewayError
from services.openai_format import parse_chat_request
from services.openai_render import StreamStats, render_chat_completion, render_chat_stream

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    req = parse_chat_request(json_body())
    ctx, gw = call_context(), gateway()
    g.access.update(model=req.model, stream=req.stream)
    key, policy = g.api_key, g.cache_policy
    if req.stream:
        stats = g.access["stats"] = StreamStats()
        cache: dict[str, str] = {}

        def start() -> tuple[str, Iterator[bytes]]:
            backend, deltas, cache["status"] = cached_chat.stream(gw, req, ctx, key, policy)
            return backend.name, render_chat_stream(deltas, req.model, req.include_usage, stats)

        def fail(e: GatewayError) -> Iterator[bytes]:
            return render_chat_stream(failing(e), req.model, req.include_usage, stats)

        name, frames = start_stream(start, fail, gw.settings.keepalive_seconds)
        g.cache_status = cache.get("status")  # unknown (X-Cache: BYPASS) if not started yet
        backend_name = name or gw.router.resolve(req.model, ctx).name
        g.access.update(backend=backend_name, cache=g.cache_status)
        response = sse_response(frames)
    else:
        backend, result, g.cache_status = cached_chat.complete(gw, req, ctx, key, policy)
        g.access.update(backend=backend.name, usage=result.usage, cache=g.cache_status)
        response = jsonify(render_chat_completion(result, req.model))
    response.headers.update(ctx.response_headers)
    return response
