"""POST /v1/responses, GET and DELETE /v1/responses/<id>."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify

from blueprints import call_context, gateway, json_body
from blueprints.streaming import failing, sse_response, start_stream
from services import responses
from services.errors import GatewayError
from services.keys import require_model
from services.openai_render import StreamStats
from services.responses_format import parse_responses_request
from services.responses_render import ResponseEvents

bp = Blueprint("responses", __name__)


@bp.post("/responses")
def create_response() -> Response:
    rreq = parse_responses_request(json_body())
    require_model(g.api_key, rreq.model)
    ctx = call_context()
    g.access.update(model=rreq.model, stream=rreq.stream)
    if rreq.stream:
        stats = g.access["stats"] = StreamStats()
        gw = gateway()

        def fail(e: GatewayError) -> Iterator[bytes]:
            return ResponseEvents(rreq, stats, lambda _: None).frames(failing(e))

        name, frames = start_stream(
            lambda: responses.stream(gw, rreq, ctx, stats), fail, gw.settings.keepalive_seconds
        )
        g.access["backend"] = name or gw.router.resolve(rreq.model, ctx).name
        response = sse_response(frames)
    else:
        g.access["backend"], g.access["usage"], body = responses.create(gateway(), rreq, ctx)
        response = jsonify(body)
    response.headers.update(ctx.response_headers)
    return response


@bp.get("/responses/<response_id>")
def retrieve_response(response_id: str) -> dict[str, object]:
    return responses.retrieve(gateway(), response_id, g.api_key.name)


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> dict[str, object]:
    return responses.delete(gateway(), response_id, g.api_key.name)
