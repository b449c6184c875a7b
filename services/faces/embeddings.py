"""Pure parsing and rendering of OpenAI Embeddings (`/v1/embeddings`). No I/O.

Wire shapes follow docs/design.md §5.5. The Python SDK asks for base64 unless told
otherwise and decodes little-endian float32, so both encodings are served.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from services.core.errors import InvalidRequestError, UpstreamError
from services.core.types import EmbeddingRequest, EmbeddingResult
from services.faces.chat_request import opt_int, requested_model
from services.faces.extension_fields import EMBEDDING_FIELDS, check_extension_fields

ENCODINGS = ("float", "base64")
TOKEN_INPUT = (
    "Token-id input is not supported: the models behind Relay tokenize text themselves, and "
    "OpenAI's token ids mean nothing to them. Send the text itself as 'input' (a string or a "
    "list of strings). LangChain's OpenAIEmbeddings sends token ids by default; create it with "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False)."
)
_KNOWN = {"model", "input", "encoding_format", "dimensions", "user"}


def parse_embedding_request(body: Any) -> tuple[EmbeddingRequest, str]:
    """Validate an OpenAI embeddings body; return the request and the encoding asked for."""
    model = requested_model(body)
    check_extension_fields(body, EMBEDDING_FIELDS)
    encoding = body.get("encoding_format")
    encoding = "float" if encoding is None else str(encoding).lower()
    if encoding not in ENCODINGS:
        raise InvalidRequestError(
            f"'encoding_format' must be 'float' or 'base64', got {body['encoding_format']!r}.",
            param="encoding_format",
        )
    user = body.get("user")
    req = EmbeddingRequest(
        model=model,
        inputs=_parse_input(body.get("input")),
        # Embedding models stay far below this; it keeps a typo from asking for gigabytes.
        dimensions=opt_int(body, "dimensions", lo=1, hi=65_536),
        user=user or None,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )
    return req, encoding


def _parse_input(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if raw is None or (isinstance(items, list) and not items):
        raise InvalidRequestError(
            "'input' is required: a string or a non-empty list of strings.", param="input"
        )
    if not isinstance(items, list):
        raise InvalidRequestError("'input' must be a string or a list of strings.", param="input")
    if all((isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, list) for x in items):
        raise InvalidRequestError(TOKEN_INPUT, param="input", code="token_input_unsupported")
    for i, text in enumerate(items):
        param = "input" if isinstance(raw, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise InvalidRequestError(f"'{param}' must be a string.", param=param)
        if not text:
            raise InvalidRequestError(f"'{param}' is empty; send some text.", param=param)
    return tuple(items)


def render_embedding_list(result: EmbeddingResult, model: str, encoding: str) -> dict[str, Any]:
    """Render vectors as an OpenAI embedding list, as floats or base64 float32."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
            for i, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def _encode(vector: tuple[float, ...], encoding: str) -> list[float] | str:
    if encoding == "float":
        return list(vector)
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except OverflowError:  # beyond float32 (3.4e38): no embedding model sends that
        raise UpstreamError("The backend sent embedding values too large for float32.") from None
    return base64.b64encode(packed).decode()
