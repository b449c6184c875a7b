"""POST /v1/embeddings."""

from __future__ import annotations

from flask import Blueprint, g

from blueprints import call_context, gateway, json_body
from services import embeddings
from services.embeddings_format import parse_embedding_request, render_embedding_list
from services.types import Usage

bp = Blueprint("embeddings", __name__)


@bp.post("/embeddings")
def create_embedding() -> dict[str, object]:
    req, encoding = parse_embedding_request(json_body())
    g.access.update(model=req.model, stream=False)
    gw, ctx = gateway(), call_context()
    backend = embeddings.route(gw, req, ctx, g.api_key)
    g.access.update(backend=backend.name)  # logged for a failed request too
    result, g.cache_status = embeddings.embed(gw, backend, req, ctx, g.cache_policy)
    g.access.update(usage=Usage(result.prompt_tokens, 0), cache=g.cache_status)
    return render_embedding_list(result, req.model, encoding)
