"""The JSON body of a pass-through request: read within the size limit, parsed strictly, and
its `model` checked against the caller's key before anything goes upstream.

Only JSON bodies are read here; uploads of other types (multipart audio, files) stream on
untouched (docs/backends.md "Pass-through of everything else").
"""

from __future__ import annotations

import json
import math
from typing import IO, Any

from services.access.keys import ApiKey, authorize_model
from services.common.json_keys import check_top_level_keys
from services.common.json_limits import MAX_JSON_DEPTH, nested_deeper_than
from services.common.unicode_text import check_no_lone_surrogates
from services.core.errors import InvalidRequestError, RequestTooLargeError


def is_json(content_type: str | None) -> bool:
    """Tell whether a Content-Type names JSON (application/json, or any `+json` type)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def looks_like_json(body: bytes) -> bool:
    """Tell whether an upstream might read these bytes as JSON whatever their Content-Type.

    Go servers (Ollama, LocalAI) and others decode the body without looking at its type, so a
    `text/plain` body holding `{"model": ...}` must be checked like a JSON one.
    """
    try:
        text = body[:4096].decode(json.detect_encoding(body), errors="ignore")
    except LookupError:
        return False
    return text.lstrip(" \t\r\n\ufeff")[:1] in ("{", "[")


def read_bounded(stream: IO[bytes], limit: int) -> bytes:
    """Read a whole body, refusing it with a 413 once it passes `limit` bytes."""
    chunks, size = [], 0
    while chunk := stream.read(min(65536, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
    return b"".join(chunks)


def check_json(body: bytes, key: ApiKey) -> str | None:
    """Parse a JSON body strictly and check its model; return the model it names, if any.

    Non-finite numbers (NaN, Infinity, 1e400) and repeated keys are refused: the upstream may
    read them otherwise than Relay does, e.g. take the other of two `model` fields.
    """
    try:
        value = json.loads(
            body,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None
    except ValueError as e:
        raise InvalidRequestError(f"The request body is not valid JSON: {e}") from None
    if nested_deeper_than(value):
        raise InvalidRequestError(
            f"The request body is nested deeper than {MAX_JSON_DEPTH} levels."
        )
    check_no_lone_surrogates(value)  # "\ud800": not text; the upstream may read it otherwise
    if not isinstance(value, dict):
        return None
    check_top_level_keys(value)  # `Model`, `MODEL`: a case-insensitive upstream's `model`
    if "model" not in value:
        return None
    model = value["model"]
    if not isinstance(model, str):
        raise InvalidRequestError("`model` must be a string.", param="model")
    authorize_model(key, model)
    return model


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is out of range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, item in pairs:
        if name in out:
            raise ValueError(f"the key {name[:40]!r} appears twice in one object")
        out[name] = item
    return out
