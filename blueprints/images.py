"""POST /v1/images/generations."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from services.core import pipeline
from services.faces.images import parse_image_request, render_images
from services.operations import image_generation

bp = Blueprint("images", __name__)


@bp.post("/images/generations")
def create_image() -> Response:
    req, record = parse_image_request(json_body(), dict(request.headers.items())), access()
    record.model = req.model
    policy = g.cache_policy  # images are never cached: the policy only completes the call
    call = pipeline.open_call(gateway(), req.model, g.api_key, call_context(), policy)
    out = image_generation.generate(call, req)
    record.backend, record.route = out.backend, out.route
    return jsonify(render_images(out.result))
