"""Ollama's native API under /api (docs/ollama.md): chat, generate, embed, embeddings, tags,
show, ps, version, and model management for the keys the operator allows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from blueprints.access_record import access
from blueprints.context import call_context, gateway, json_body
from blueprints.request_body import body_stream, read_body
from blueprints.streaming import stream_reply
from services.core import pipeline
from services.core.errors import InvalidRequestError
from services.core.pipeline import Call, Streamed
from services.core.types import ChatDelta, StreamStats
from services.faces.ollama_reply import (
    MEDIA_TYPE,
    failed_stream,
    render_chat,
    render_chat_stream,
    render_embed,
    render_embeddings,
    render_generate,
    render_generate_stream,
)
from services.faces.ollama_request import (
    parse_chat,
    parse_embed,
    parse_embeddings,
    parse_generate,
    parse_model_name,
)
from services.operations import chat, ollama_native

bp = Blueprint("ollama", __name__)

_DIGEST = re.compile(r"sha256[:-][0-9a-f]{64}")
Render = Callable[[Iterator[ChatDelta], str, StreamStats, float], Iterator[bytes]]


def _started() -> float:
    return float(g.get("started", time.perf_counter()))


def _streamed(
    call: Call, model: str, open_stream: Callable[[], Streamed[ChatDelta]], render: Render
) -> Response:
    """Stream NDJSON lines through the one streaming helper: no keep-alive bytes, as Ollama's
    clients parse every line."""
    gw, record, started = gateway(), access(), _started()

    def opened(stats: StreamStats) -> Streamed[bytes]:
        out = open_stream()
        return out.framed(render(out.deltas, model, stats, started))

    return stream_reply(
        record,
        call,
        opened,
        failed_stream,
        gw.settings.keepalive_seconds,
        keepalive=None,
        mimetype=MEDIA_TYPE,
    )


@bp.post("/chat")
def ollama_chat() -> Response:
    req, gw, record = parse_chat(json_body()), gateway(), access()
    record.model, record.stream = req.model, req.stream
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    if req.stream:
        return _streamed(call, req.model, lambda: chat.stream(gw, call, req), render_chat_stream)
    out = chat.complete(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    response = jsonify(render_chat(out.result, req.model, _started()))
    response.headers.update(out.headers)
    return response


@bp.post("/generate")
def ollama_generate() -> Response:
    req, gw, record = parse_generate(json_body()), gateway(), access()
    model = req.text.model
    record.model, record.stream = model, req.stream
    call = pipeline.open_call(gw, model, g.api_key, call_context(), g.cache_policy)
    if req.stream:
        return _streamed(
            call,
            model,
            lambda: ollama_native.stream_generate(gw, call, req),
            render_generate_stream,
        )
    out = ollama_native.generate(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    response = jsonify(render_generate(out.result, model, _started()))
    response.headers.update(out.headers)
    return response


@bp.post("/embed")
def ollama_embed() -> dict[str, Any]:
    req, gw, record = parse_embed(json_body()), gateway(), access()
    record.model = req.model
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    out = ollama_native.embed(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    return render_embed(out.result, req.model, _started())


@bp.post("/embeddings")
def ollama_embeddings() -> dict[str, Any]:
    req, gw, record = parse_embeddings(json_body()), gateway(), access()
    record.model = req.model
    call = pipeline.open_call(gw, req.model, g.api_key, call_context(), g.cache_policy)
    out = ollama_native.embed(gw, call, req)
    record.took(out.backend, out.cache, out.usage, route=out.route)
    return render_embeddings(out.result)


@bp.route("/tags", methods=["GET", "HEAD"])
def ollama_tags() -> dict[str, Any]:
    return ollama_native.tags(gateway(), g.api_key)


@bp.get("/ps")
def ollama_ps() -> dict[str, Any]:
    return ollama_native.running(gateway(), g.api_key)


@bp.route("/version", methods=["GET", "HEAD"])
def ollama_version() -> dict[str, Any]:
    return ollama_native.version(gateway())


@bp.post("/show")
def ollama_show() -> Response:
    body = json_body()
    model = parse_model_name(body, "model", "name")
    access().model = model
    return jsonify(ollama_native.show(gateway(), g.api_key, model, body))  # type: ignore[arg-type]


# --- model management: 403 unless the key has ollama_admin ------------------------------


def _managed(out: ollama_native.Managed) -> Response:
    record = access()
    record.backend, record.stream, record.routed = out.backend, True, False
    return Response(
        out.body,
        status=out.status,
        mimetype=None,
        content_type=out.media_type,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _manage(action: str) -> Response:
    ollama_native.check_admin(g.api_key, action)  # before the body is even read
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    out = ollama_native.manage(
        gateway(),
        g.api_key,
        action,
        request.method,
        body,
        read_body(),
        request.headers.get("Content-Type") or "application/json",
    )
    access().model = str(body.get("model") or body.get("name") or body.get("source") or "-")
    return _managed(out)


@bp.post("/pull")
def ollama_pull() -> Response:
    return _manage("pull")


@bp.post("/push")
def ollama_push() -> Response:
    return _manage("push")


@bp.post("/create")
def ollama_create() -> Response:
    return _manage("create")


@bp.post("/copy")
def ollama_copy() -> Response:
    return _manage("copy")


@bp.delete("/delete")
def ollama_delete() -> Response:
    return _manage("delete")


@bp.route("/blobs/<digest>", methods=["HEAD", "POST"])
def ollama_blob(digest: str) -> Response:
    ollama_native.check_admin(g.api_key, "blobs")
    if not _DIGEST.fullmatch(digest):
        raise InvalidRequestError("The digest must be sha256: and 64 hex digits.", param="digest")
    body: Iterator[bytes] | None = None
    if request.method == "POST":
        stream = body_stream()
        body = iter(lambda: stream.read(65536), b"")
    return _managed(ollama_native.blob(gateway(), g.api_key, request.method, digest, body))
