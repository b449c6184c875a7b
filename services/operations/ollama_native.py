"""Ollama's native API on the core: generate and embed routed like every other call, and the
informational and model-management endpoints (docs/ollama.md).

Chat goes through services/operations/chat.py unchanged. `/api/generate` goes to an Ollama
backend as a prompt (its template, `system`, `raw`, `suffix` and `images` applied there); a
backend that only chats gets it as one chat turn, unless the caller asked for raw mode or a
suffix, which only a text completion does.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from loguru import logger

from services.access.keys import ApiKey, authorize_model
from services.backends.base import Backend
from services.backends.ollama import OllamaBackend
from services.common.json_keys import check_ollama_spelling
from services.core.errors import (
    GatewayError,
    InvalidRequestError,
    PermissionDeniedError,
    UnsupportedError,
)
from services.core.gateway import Gateway
from services.core.pipeline import Call, Outcome, Streamed
from services.core.types import (
    ChatDelta,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    ModelInfo,
    Usage,
)
from services.faces.completions import CompletionRequest
from services.faces.ollama_reply import render_show, render_tag
from services.faces.ollama_request import GenerateCall
from services.operations import chat, completions, embeddings

# The version /api/version reports when no Ollama backend answers: the oldest Ollama whose
# native API matches what this face speaks (tool call ids arrived in v0.12.10).
FACE_VERSION = "0.12.10"

# Model management: the path, and the body fields that name models the key must be allowed.
MANAGEMENT = {
    "pull": ("model", "name"),
    "push": ("model", "name"),
    "create": ("model", "name"),
    "delete": ("model", "name"),
    "copy": ("source", "destination"),
}


def is_ollama(backend: Backend) -> bool:
    return isinstance(backend, OllamaBackend)


# --- generate -----------------------------------------------------------------------------


def as_text(call: Call, req: GenerateCall) -> bool:
    """Whether the call runs as a prompt (Ollama, raw mode, a suffix) rather than a chat turn."""
    return is_ollama(call.backend) or req.needs_text


def generate(gw: Gateway, call: Call, req: GenerateCall) -> Outcome[ChatResult]:
    """A whole /api/generate answer, from the cache or the backend."""
    if not as_text(call, req):
        return chat.complete(gw, call, req.chat)
    out = completions.complete(gw, call, _completion(req))
    result = out.result[0]
    return Outcome(out.backend, result, out.cache, out.headers, result.usage, out.route)


def stream_generate(gw: Gateway, call: Call, req: GenerateCall) -> Streamed[ChatDelta]:
    if not as_text(call, req):
        return chat.stream(gw, call, req.chat)
    out = completions.stream(gw, call, _completion(req))
    return Streamed(out.backend, _unindexed(out.deltas), out.cache, out.headers, out.route)


def _completion(req: GenerateCall) -> CompletionRequest:
    return CompletionRequest(req.text.model, (req.text,), stream=req.stream)


def _unindexed(deltas: Iterator[tuple[int, ChatDelta]]) -> Generator[ChatDelta, None, None]:
    # A plain generator that closes what it wraps, so close() reaches the upstream
    # (docs/design.md §4.2).
    try:
        for _index, delta in deltas:
            yield delta
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()


# --- embeddings ---------------------------------------------------------------------------


def embed(gw: Gateway, call: Call, req: EmbeddingRequest) -> Outcome[EmbeddingResult]:
    """Embed the inputs; no input at all asks only an Ollama backend (it loads the model)."""
    if not req.inputs and not is_ollama(call.backend):
        return Outcome(call.backend.name, EmbeddingResult(()), None, {}, Usage())
    out = embeddings.embed(gw, call, req)
    usage = Usage(out.result.prompt_tokens)
    return Outcome(out.backend, out.result, out.cache, out.headers, usage, out.route)


# --- model information --------------------------------------------------------------------


def _ollama_backends(gw: Gateway) -> list[OllamaBackend]:
    return [b for b in gw.router.backends if isinstance(b, OllamaBackend)]


def _owned(gw: Gateway, key: ApiKey, backend: Backend, name: Any) -> bool:
    """A model a backend listed is shown when the key may use it and the route leads there."""
    return isinstance(name, str) and key.allows(name) and gw.router.resolve_or_none(name) is backend


def tags(gw: Gateway, key: ApiKey) -> dict[str, Any]:
    """Every backend's models the key may use: Ollama's own entries, others made up."""
    models: list[dict[str, Any]] = []
    seen: set[str] = set()
    errors: list[GatewayError] = []
    for backend in gw.router.backends:
        try:
            if isinstance(backend, OllamaBackend):
                listed = backend.native("GET", "/api/tags")
                raw = listed.get("models") if isinstance(listed, dict) else None
                entries = [m for m in raw or [] if isinstance(m, dict)]
            else:
                entries = [render_tag(m) for m in backend.list_models()]
        except GatewayError as e:
            logger.warning("listing models: {}", e.message)
            errors.append(e)
            continue
        for entry in entries:
            name = entry.get("name")
            if isinstance(name, str) and name not in seen and _owned(gw, key, backend, name):
                seen.add(name)
                models.append(entry)
    if errors and len(errors) == len(gw.router.backends):
        raise errors[0]
    # Aliases the key may call, listed like models of other backends (docs/routing.md).
    aliases = gw.router.aliases_for(key.name)
    models = [m for m in models if m.get("name") not in aliases]
    for name in aliases:
        if key.allows(name):
            models.append(render_tag(ModelInfo(name, 0, "relay")))
    return {"models": models}


def running(gw: Gateway, key: ApiKey) -> dict[str, Any]:
    """The models loaded on the Ollama backends (/api/ps) that the key may use."""
    models: list[dict[str, Any]] = []
    for backend in _ollama_backends(gw):
        try:
            listed = backend.native("GET", "/api/ps")
        except GatewayError as e:
            logger.warning("listing running models: {}", e.message)
            continue
        raw = listed.get("models") if isinstance(listed, dict) else None
        models.extend(
            m for m in raw or [] if isinstance(m, dict) and _owned(gw, key, backend, m.get("name"))
        )
    return {"models": models}


def show(gw: Gateway, key: ApiKey, model: str, body: dict[str, Any]) -> Any:
    """/api/show from the Ollama backend that owns the model; a minimal answer elsewhere."""
    authorize_model(key, model)
    # An alias shows its first target (docs/routing.md); a real name its own backend's model.
    targets = gw.router.alias(model, key.name)
    backend = targets[0].backend if targets else gw.router.backend_for(model)
    upstream = targets[0].model if targets else model
    if isinstance(backend, OllamaBackend):
        # The name Relay checked, under the field Ollama reads first: never another spelling.
        asked = {k: v for k, v in body.items() if k not in ("model", "name")}
        return backend.native("POST", "/api/show", {**asked, "model": upstream})
    try:
        listed = {m.id: m for m in backend.list_models()}
    except GatewayError as e:
        logger.warning("showing {}: {}", model, e.message)
        listed = {}
    return render_show(listed.get(upstream))


def version(gw: Gateway) -> dict[str, Any]:
    """The first answering Ollama backend's version; the face's own when none answers."""
    for backend in _ollama_backends(gw):
        try:
            answer = backend.native("GET", "/api/version")
        except GatewayError as e:
            logger.warning("reading the Ollama version: {}", e.message)
            continue
        if isinstance(answer, dict) and isinstance(answer.get("version"), str):
            return {"version": answer["version"]}
    return {"version": FACE_VERSION}


# --- model management ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Managed:
    backend: str
    status: int
    media_type: str
    body: Iterator[bytes]


def check_admin(key: ApiKey, action: str) -> None:
    """Model management is refused (403) unless the operator allowed it for this key."""
    if not key.ollama_admin:
        raise PermissionDeniedError(
            f"Model management ({action}) is not allowed for the API key '{key.name}'; the "
            "operator can allow it with ollama_admin = true in the key's table.",
            code="model_management_not_allowed",
        )


def registry_host(name: str) -> str | None:
    """The registry a model name makes Ollama call, when it names one: the first of three or
    more `/`-separated parts (`host[:port]/namespace/model`), or anything with a scheme. An
    Ollama on Windows reads `\\` as `/` too."""
    if "://" in name:
        return name
    parts = name.replace("\\", "/").split("/")
    return parts[0] if len(parts) >= 3 else None


def check_registry(key: ApiKey, name: str) -> None:
    """A pull, a push or a create from a name that names a registry host is allowed only when
    the key's list spells that host out (`registry.example/team/*`) or allows every model: a
    wildcard meant for tags (`llama3.2*`) must not let the caller choose the host Ollama
    connects to, nor where pushed weights go (docs/threat-model.md "The Ollama and Anthropic
    faces")."""
    host = registry_host(name)
    if host is None or "*" in key.models:
        return
    for pattern in key.models:
        named, slash, _ = pattern.partition("/")
        literal = not any(c in named for c in "*?[")
        if slash and literal and "://" not in pattern and named.lower() == host.lower():
            return
    raise PermissionDeniedError(
        f"The API key '{key.name}' may not name the registry of `{name[:200]}`: its model list "
        "must spell that registry host out.",
        param="model",
    )


def manage(
    gw: Gateway,
    key: ApiKey,
    action: str,
    method: str,
    body: dict[str, Any],
    raw: bytes,
    content_type: str | None,
) -> Managed:
    """Pass an admin key's pull, push, create, copy or delete to the Ollama backend that owns
    the model (the source, for a copy), after the key's model list allows every name."""
    check_admin(key, action)
    # The body goes to Ollama as it came: every field that names a model must be the one
    # checked here, not `From` or `ſource` beside it (docs/threat-model.md "The Ollama and
    # Anthropic faces").
    check_ollama_spelling(body)
    names = [body[n] for n in MANAGEMENT[action] if isinstance(body.get(n), str) and body[n]]
    if action == "copy":
        for field in MANAGEMENT["copy"]:
            if not (isinstance(body.get(field), str) and body[field]):
                raise InvalidRequestError(f"'{field}' is required.", param=field)
    if not names:
        field = MANAGEMENT[action][0]
        raise InvalidRequestError(f"'{field}' is required.", param=field)
    if action != "copy":
        names = names[:1]
    for old in ("modelfile", "path") if action == "create" else ():
        if body.get(old) is not None:  # an old Ollama's Modelfile `FROM`, or a file on its disk
            raise InvalidRequestError(
                f"'{old}' is not accepted: name the base model in 'from', and upload files as "
                "blobs named in 'files'.",
                param=old,
            )
    if action == "create" and isinstance(body.get("from"), str) and body["from"]:
        authorize_model(key, body["from"])  # no key makes a model it may not use its own
        check_registry(key, body["from"])
    for name in names:
        authorize_model(key, name)
        if action in ("pull", "push"):
            check_registry(key, name)
    backend = gw.router.backend_for(names[0])  # real names only: aliases are not managed
    if not isinstance(backend, OllamaBackend):
        raise UnsupportedError(
            f"The model `{names[0]}` is served by {backend.title}, which is not Ollama: models "
            "are managed only on Ollama backends.",
            param="model",
        )
    if action == "copy" and gw.router.backend_for(names[1]) is not backend:
        raise InvalidRequestError(
            f"`{names[1]}` would be served by another backend than `{names[0]}`.",
            param="destination",
        )
    status, media, reply = backend.forward(method, f"/api/{action}", raw, content_type)
    return Managed(backend.name, status, media, reply)


def blob(
    gw: Gateway, key: ApiKey, method: str, digest: str, body: Iterator[bytes] | None
) -> Managed:
    """HEAD or POST /api/blobs/<digest> for an admin key, on the first Ollama backend."""
    check_admin(key, "blobs")
    backends = _ollama_backends(gw)
    if not backends:
        raise UnsupportedError("No Ollama backend is configured: there is nowhere to put blobs.")
    backend = backends[0]
    status, media, reply = backend.forward(method, f"/api/blobs/{digest}", body, None)
    return Managed(backend.name, status, media, reply)
