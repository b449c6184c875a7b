"""POST /v1/responses, GET and DELETE /v1/responses/<id>."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from blueprints.streaming import stream_reply
from services.core import pipeline
from services.core.types import StreamStats
from services.faces.responses_reply import ResponseEvents
from services.faces.responses_request import parse_responses_request
from services.operations import responses

bp = Blueprint("responses", __name__)


@bp.post("/responses")
def create_response() -> Response:
    rreq, gw, record = parse_responses_request(json_body()), gateway(), access()
    record.model, record.stream = rreq.model, rreq.stream
    policy = responses.uncached(g.cache_policy)
    call = pipeline.open_call(gw, rreq.model, g.api_key, call_context(), policy)
    if rreq.stream:

        def failed(deltas: Iterator[Any], stats: StreamStats) -> Iterator[bytes]:
            return ResponseEvents(rreq, stats, lambda _: None).frames(deltas)

        return stream_reply(
            record,
            call,
            lambda stats: responses.stream(gw, call, rreq, stats),
            failed,
            gw.settings.keepalive_seconds,
        )
    out = responses.create(gw, call, rreq)
    record.took(out.backend, None, out.usage, route=out.route)
    response = jsonify(out.result)
    response.headers.update(out.headers)
    return response


@bp.get("/responses/<response_id>")
def retrieve_response(response_id: str) -> dict[str, object]:
    return responses.retrieve(gateway(), response_id, g.api_key.name)


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> dict[str, object]:
    return responses.delete(gateway(), response_id, g.api_key.name)
