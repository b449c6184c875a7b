"""Pure translation for Ollama's /api/generate (legacy completions) and /api/embed. No I/O.

Wire shapes follow docs/design.md §7.1 (generate request), §7.3 (generate chunks use top-level
`response`/`thinking`) and §7.4 (embed). OllamaBackend does the HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.finite_numbers import is_finite_number, token_count
from services.core.errors import UpstreamError
from services.core.types import (
    ChatDelta,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    TextRequest,
    Usage,
)
from services.faces.extension_fields import OLLAMA_OPTIONS, check_extension_fields


def generate_payload(req: TextRequest, stream: bool) -> dict[str, Any]:
    """Build the /api/generate body for a prompt.

    The prompt goes to the model verbatim (`raw: true`), as OpenAI, vLLM and llama.cpp treat
    /v1/completions: clients of this endpoint build their own prompt format. With a `suffix`
    the model's template is applied, since Ollama does fill-in-the-middle through the template
    and ignores `suffix` in raw mode. A request's `raw` field overrides either choice.
    """
    options = sampling_options(req)
    extra = req.extra
    if req.ollama is not None:
        # Ollama's own /api/generate, sent on as it came: the template applies unless `raw`.
        native: dict[str, Any] = {"model": req.model, "prompt": req.prompt}
        if req.suffix is not None:
            native["suffix"] = req.suffix
        if options:
            native["options"] = options
        merge_native(native, req.ollama)
        native["stream"] = stream
        return native
    raw = extra["raw"] if isinstance(extra.get("raw"), bool) else req.suffix is None
    payload: dict[str, Any] = {"model": req.model, "prompt": req.prompt, "raw": raw}
    if req.suffix is not None:
        payload["suffix"] = req.suffix
    if options:
        payload["options"] = options
    if extra.get("keep_alive") is not None:
        payload["keep_alive"] = extra["keep_alive"]
    payload["stream"] = stream
    return payload


def merge_native(payload: dict[str, Any], native: Mapping[str, Any]) -> None:
    """Add the fields of a native Ollama request the core does not model; its `options` go on
    over the ones built from the core's fields, the rest as they came."""
    for name, value in native.items():
        if name == "options" and isinstance(value, Mapping):
            payload["options"] = {**payload.get("options", {}), **value}
        else:
            payload[name] = value


def sampling_options(req: ChatRequest | TextRequest) -> dict[str, Any]:
    """Map the OpenAI sampling fields to Ollama `options`, plus Ollama's own options.

    temperature and top_p are sent only when given, so the Modelfile's defaults apply
    otherwise (Ollama's own layer forces 1.0, reference §6 #2). Ollama options sent as
    top-level fields (`num_ctx`, `top_k`, ...: Open WebUI's settings on an OpenAI connection)
    are type-checked and moved into `options`; the caller's own `options` object wins over both,
    being Ollama's native spelling. A wrong type is a 400 naming the field.
    """
    check_extension_fields(req.extra, OLLAMA_OPTIONS)
    options: dict[str, Any] = {
        k: v
        for k, v in (
            ("temperature", req.temperature),
            ("top_p", req.top_p),
            ("num_predict", req.max_tokens),
            ("seed", req.seed),
            ("presence_penalty", req.presence_penalty),
            ("frequency_penalty", req.frequency_penalty),
            ("stop", list(req.stop) or None),
        )
        if v is not None
    }
    options.update((k, req.extra[k]) for k in OLLAMA_OPTIONS if req.extra.get(k) is not None)
    if isinstance(req.extra.get("options"), dict):  # Ollama-specific, e.g. num_ctx
        options.update(req.extra["options"])
    return options


def generate_delta(chunk: Any, title: str) -> ChatDelta | None:
    """Translate one /api/generate object (a stream line or the whole reply); None if empty.

    A non-object raises ValueError; an in-band `error` raises UpstreamError (§3.2).
    """
    if not isinstance(chunk, dict):
        raise ValueError("not an object")
    if "error" in chunk:
        raise UpstreamError(f"{title} failed mid-reply: {chunk['error']}")
    text = chunk.get("response") or ""
    thinking = chunk.get("thinking") or ""
    if chunk.get("done"):
        # done_reason "load" (empty prompt) and "" (closed) both just mean the text ended.
        return ChatDelta(
            content=text,
            reasoning=thinking,
            finish_reason="length" if chunk.get("done_reason") == "length" else "stop",
            usage=usage_of(chunk),
        )
    if not text and not thinking:
        return None
    return ChatDelta(content=text, reasoning=thinking)


def embed_payload(req: EmbeddingRequest) -> dict[str, Any]:
    """Build the /api/embed body: always a list of strings, `dimensions` passed on."""
    payload: dict[str, Any] = {"model": req.model, "input": list(req.inputs)}
    if req.dimensions is not None:
        payload["dimensions"] = req.dimensions
    for name in ("truncate", "keep_alive", "options"):  # Ollama-specific extras
        if req.extra.get(name) is not None:
            payload[name] = req.extra[name]
    if req.ollama is not None:
        merge_native(payload, req.ollama)
    return payload


def embedding_result(body: Any, count: int, title: str) -> EmbeddingResult:
    """Check and translate an /api/embed reply holding one vector per input."""
    vectors = body.get("embeddings") if isinstance(body, dict) else None
    if (
        not isinstance(vectors, list)
        or len(vectors) != count
        or not all(isinstance(v, list) and v and all(_is_number(x) for x in v) for v in vectors)
    ):
        raise UpstreamError(f"{title} sent no usable embeddings ({count} expected).")
    return EmbeddingResult(
        vectors=tuple(tuple(float(x) for x in v) for v in vectors),
        prompt_tokens=token_count(body.get("prompt_eval_count")),
    )


def _is_number(x: Any) -> bool:
    # 1e400 from an upstream reads as infinity and would go out as `Infinity`, not JSON.
    return is_finite_number(x)


def usage_of(body: Mapping[str, Any]) -> Usage:
    """Read the token counts of a final object."""
    # Zero counts are omitted from Ollama's JSON (omitempty), so a missing one means 0.
    return Usage(
        prompt_tokens=token_count(body.get("prompt_eval_count")),
        completion_tokens=token_count(body.get("eval_count")),
    )
