"""GET /v1/models and GET /v1/models/<id>: only the models the caller's key may use."""

from __future__ import annotations

from flask import Blueprint, g

from blueprints import gateway
from services.keys import require_model, visible_models
from services.openai_render import render_model, render_model_list

bp = Blueprint("models", __name__)


@bp.get("/models")
def list_models() -> dict[str, object]:
    return render_model_list(visible_models(g.api_key, gateway().router.list_models()))


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id: str) -> dict[str, object]:
    require_model(g.api_key, model_id)
    return render_model(gateway().router.find_model(model_id))
