"""GET /v1/models and GET /v1/models/<id>: only the models the caller's key may use.

In Anthropic's shape when the request carries `anthropic-version` (docs/anthropic.md "Models").
"""

from __future__ import annotations

from flask import Blueprint, g, request
from werkzeug.routing import PathConverter

from blueprints.context import gateway
from services.access.keys import authorize_model, visible_models
from services.faces.anthropic_reply import render_model_info, render_model_page
from services.faces.chat_reply import render_model, render_model_list

bp = Blueprint("models", __name__)


@bp.get("/models")
def list_models() -> dict[str, object]:
    models = visible_models(g.api_key, gateway().router.list_models(g.api_key.name))
    if "anthropic-version" in request.headers:
        return render_model_page(models)
    return render_model_list(models)


class ModelIdConverter(PathConverter):
    """A model id, slashes and all: `Qwen/Qwen3-8B` (vLLM), `/models/x.gguf` (llama.cpp names
    a model by its file path). The SDKs send them %2F-escaped and the server unescapes them, so
    the id may start with a slash or hold two in a row: Werkzeug's `path` takes neither."""

    regex = ".+"
    part_isolating = False  # Werkzeug would guess True from a regex without a slash


# merge_slashes=False: `//models/x.gguf` is that id, not a redirect to another path.
@bp.get("/models/<model_id:model_id>", merge_slashes=False)
def retrieve_model(model_id: str) -> dict[str, object]:
    authorize_model(g.api_key, model_id)
    info = gateway().router.find_model(model_id, g.api_key.name)
    if "anthropic-version" in request.headers:
        return render_model_info(info)
    return render_model(info)
