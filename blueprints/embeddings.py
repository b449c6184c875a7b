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
    backend, result, g.cache_status = embeddings.embed(
        gateway(), req, call_context(), g.api_key, g.cache_policy
    )
    g.access.update(
        backend=backend.name, usage=Usage(result.prompt_tokens, 0), cache=g.cache_status
    )
    return render_embedding_list(result, req.model, encoding)
