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


# Ids may hold slashes (`Qwen/Qwen3-8B`) and start with one (llama.cpp names a model by its
# file path): the SDKs send them %2F-escaped, the server unescapes them, and the id must reach
# here whole rather than be merged into a redirect to another path.
@bp.get("/models/<path:model_id>", merge_slashes=False)
def retrieve_model(model_id: str) -> dict[str, object]:
    require_model(g.api_key, model_id)
    return render_model(gateway().router.find_model(model_id))
