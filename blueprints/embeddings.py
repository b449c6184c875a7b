"""POST /v1/embeddings."""

from __future__ import annotations

from flask import Blueprint, g

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from services.core import pipeline
from services.core.types import Usage
from services.faces.embeddings import parse_embedding_request, render_embedding_list
from services.operations import embeddings

bp = Blueprint("embeddings", __name__)


@bp.post("/embeddings")
def create_embedding() -> dict[str, object]:
    (req, encoding), gw, record = parse_embedding_request(json_body()), gateway(), access()
    record.model = req.model
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    out = embeddings.embed(gw, call, req)
    record.took(out.backend, out.cache, Usage(out.result.prompt_tokens, 0), route=out.route)
    return render_embedding_list(out.result, req.model, encoding)
