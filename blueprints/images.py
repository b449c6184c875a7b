"""POST /v1/images/generations."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from blueprints import call_context, gateway, json_body
from blueprints.access_record import access
from services import image_generation
from services.images_format import parse_image_request, render_images
from services.keys import require_model

bp = Blueprint("images", __name__)


@bp.post("/images/generations")
def create_image() -> Response:
    req = parse_image_request(json_body(), request.headers)
    require_model(g.api_key, req.model)
    access().model = req.model
    backend, images = image_generation.generate(gateway(), req, call_context())
    access().backend = backend.name
    return jsonify(render_images(images))
