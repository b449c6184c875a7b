"""Pure parsing of Ollama's native API requests into core types. No I/O.

`/api/chat`, `/api/generate`, `/api/embed` and the legacy `/api/embeddings` (docs/ollama.md).
Errors name the caller's own fields (`messages[0].images[1]`, `options.temperature`).

Nothing is lost on the way to an Ollama backend: the fields the core does not model travel in
the core request's `ollama` mapping, as they came, and the Ollama backend sends them on. The
translatable ones also fill the core's fields (`options.temperature` → `temperature`,
`think` → `reasoning_effort`, `format` → `response_format`), which is what Dify apps and
OpenAI-compatible upstreams receive.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.finite_numbers import is_finite_number
from services.common.json_keys import check_ollama_spelling
from services.core.errors import InvalidRequestError
from services.core.types import (
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    Message,
    TextRequest,
    ToolCall,
)
from services.faces.chat_request import _parse_tools, requested_model
from services.faces.extension_fields import OLLAMA_OPTIONS, THINK_LEVELS

ROLES = ("system", "user", "assistant", "tool", "developer")

# think → the core's reasoning_effort, for backends other than Ollama. `false` sends none:
# many OpenAI-compatible servers refuse reasoning_effort "none", and a model asked nothing
# about reasoning uses its default.
THINK_EFFORT: dict[Any, str | None] = {
    False: None,
    True: "medium",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}


def _number(v: Any) -> bool:
    return is_finite_number(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


# The options Ollama reads by type (docs/design.md §7.2). A wrong type is a 500 from Ollama;
# here it is a 400 naming the option. Unknown options go on untouched (Ollama ignores them).
_OPTION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **OLLAMA_OPTIONS,
    "temperature": (_number, "a number"),
    "top_p": (_number, "a number"),
    "presence_penalty": (_number, "a number"),
    "frequency_penalty": (_number, "a number"),
    "num_predict": (_int, "an integer"),
    "seed": (_int, "an integer"),
    "stop": (_strings, "an array of strings"),
}


@dataclass(frozen=True, slots=True)
class GenerateCall:
    """A parsed /api/generate: the prompt as Ollama takes it (`text`), and as one chat turn
    (`chat`: `system` and the prompt with its images) for backends that only chat."""

    text: TextRequest
    chat: ChatRequest
    stream: bool
    # The caller asked for what only a text completion does: raw mode or fill-in-the-middle.
    needs_text: bool


# --- /api/chat ----------------------------------------------------------------------------


def parse_chat(body: Any) -> ChatRequest:
    """Validate an Ollama /api/chat body and turn it into a ChatRequest (streaming by default)."""
    model = requested_model(body)
    raw_messages = body.get("messages")
    if raw_messages is None:
        raw_messages = []
    if not isinstance(raw_messages, list):
        raise InvalidRequestError("'messages' must be an array.", param="messages")
    if not raw_messages:
        raise InvalidRequestError(
            "'messages' is empty: Relay does not load models on their own; send a message.",
            param="messages",
        )
    messages = tuple(_message(m, f"messages[{i}]") for i, m in enumerate(raw_messages))
    options = _options(body.get("options"))
    native = _native(body, ("model", "messages", "stream", "tools"))
    return ChatRequest(
        model=model,
        messages=messages,
        stream=_stream(body),
        **_sampling(options),
        tools=_parse_tools(body.get("tools")),
        response_format=_format(body.get("format")),
        reasoning_effort=_think(body.get("think")),
        include_usage=True,
        ollama=native,
    )


def _message(raw: Any, where: str) -> Message:
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where)
    role = raw.get("role")
    role = role.lower() if isinstance(role, str) else role
    if role not in ROLES:
        raise InvalidRequestError(
            f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}.",
            param=f"{where}.role",
        )
    content = raw.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise InvalidRequestError(
            f"'{where}.content' must be a string (images go in '{where}.images').",
            param=f"{where}.content",
        )
    images = _images(raw.get("images"), f"{where}.images")
    parts: str | tuple[ContentPart, ...] = content
    if images:
        text = (ContentPart(type="text", text=content),) if content else ()
        parts = text + tuple(ContentPart(type="image", url=url) for url in images)
    for name in ("thinking", "tool_name", "tool_call_id"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(
                f"'{where}.{name}' must be a string.", param=f"{where}.{name}"
            )
    thinking = raw.get("thinking")
    return Message(
        role=role,
        content=parts,
        name=raw.get("tool_name") or None,
        tool_calls=_tool_calls(raw.get("tool_calls"), where) if role == "assistant" else (),
        tool_call_id=raw.get("tool_call_id") or None,
        reasoning=thinking or None,
    )


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequestError(
            f"'{where}.tool_calls' must be an array.", param=f"{where}.tool_calls"
        )
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequestError(
                f"'{at}.function.name' is required.", param=f"{at}.function.name"
            )
        arguments = fn.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidRequestError(
                f"'{at}.function.arguments' must be an object.",
                param=f"{at}.function.arguments",
            )
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise InvalidRequestError(f"'{at}.id' must be a string.", param=f"{at}.id")
        given = fn.get("index")
        index = given if isinstance(given, int) and _int(given) and 0 <= given < 2**31 else j
        calls.append(
            ToolCall(
                id=call_id or "",
                name=fn["name"],
                arguments=json.dumps(arguments, ensure_ascii=False),
                index=index,
            )
        )
    return tuple(calls)


def _images(raw: Any, where: str) -> tuple[str, ...]:
    """Ollama's images (base64, no data: prefix) as data: URLs, the bytes untouched."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequestError(f"'{where}' must be an array of base64 strings.", param=where)
    urls = []
    for k, image in enumerate(raw):
        at = f"{where}[{k}]"
        if not isinstance(image, str) or not image:
            raise InvalidRequestError(f"'{at}' must be a base64 string.", param=at)
        try:
            head = base64.b64decode(image, validate=True)[:16]
        except (binascii.Error, ValueError):
            raise InvalidRequestError(
                f"'{at}' is not valid base64 (send the image's bytes, base64 encoded, with no "
                "data: prefix).",
                param=at,
            ) from None
        urls.append(f"data:{_media_type(head)};base64,{image}")
    return tuple(urls)


def _media_type(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


# --- /api/generate ------------------------------------------------------------------------


def parse_generate(body: Any) -> GenerateCall:
    """Validate an Ollama /api/generate body."""
    model = requested_model(body)
    prompt = _opt_str(body, "prompt") or ""
    suffix = _opt_str(body, "suffix")
    system = _opt_str(body, "system")
    _opt_str(body, "template")
    raw = body.get("raw")
    if raw is not None and not isinstance(raw, bool):
        raise InvalidRequestError("'raw' must be true or false.", param="raw")
    if not prompt and not suffix:
        raise InvalidRequestError(
            "'prompt' is empty: Relay does not load models on their own; send a prompt.",
            param="prompt",
        )
    images = _images(body.get("images"), "images")
    options = _options(body.get("options"))
    sampling = _sampling(options)
    native = _native(body, ("model", "prompt", "suffix", "stream"))
    stream = _stream(body)
    text = TextRequest(
        model=model,
        prompt=prompt,
        suffix=suffix or None,
        **sampling,
        ollama=native,
    )
    user: str | tuple[ContentPart, ...] = prompt
    if images:
        user = (ContentPart(type="text", text=prompt),) + tuple(
            ContentPart(type="image", url=url) for url in images
        )
    turn = (Message(role="system", content=system),) if system else ()
    chat = ChatRequest(
        model=model,
        messages=(*turn, Message(role="user", content=user)),
        stream=stream,
        **sampling,
        response_format=_format(body.get("format")),
        reasoning_effort=_think(body.get("think")),
        include_usage=True,
        ollama=native,
    )
    return GenerateCall(text, chat, stream, needs_text=bool(raw) or bool(suffix))


# --- /api/embed and /api/embeddings -------------------------------------------------------


def parse_embed(body: Any) -> EmbeddingRequest:
    """Validate an Ollama /api/embed body: `input` is a string or an array of strings."""
    model = requested_model(body)
    raw = body.get("input")
    if raw is None or raw == "":
        inputs: tuple[str, ...] = ()
    elif isinstance(raw, str):
        inputs = (raw,)
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        inputs = tuple(raw)
    else:
        raise InvalidRequestError(
            "'input' must be a string or an array of strings (token arrays are not accepted).",
            param="input",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _int(dimensions) or dimensions < 1):
        raise InvalidRequestError("'dimensions' must be a positive integer.", param="dimensions")
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise InvalidRequestError("'truncate' must be true or false.", param="truncate")
    _options(body.get("options"))
    _keep_alive(body)
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        dimensions=dimensions,
        ollama=_native(body, ("model", "input", "dimensions")),
    )


def parse_embeddings(body: Any) -> EmbeddingRequest:
    """Validate a legacy /api/embeddings body: one `prompt`."""
    model = requested_model(body)
    prompt = _opt_str(body, "prompt") or ""
    _options(body.get("options"))
    _keep_alive(body)
    # Only what the legacy endpoint reads goes on: it is answered from /api/embed, which would
    # read other fields (`input`, `dimensions`) the caller never meant for it.
    native = _native(body, ("model", "prompt"))
    return EmbeddingRequest(
        model=model,
        inputs=(prompt,) if prompt else (),
        ollama={k: v for k, v in native.items() if k in ("options", "keep_alive")},
    )


def parse_model_name(body: Any, *names: str) -> str:
    """The model a body names under the first of `names` it has (`model`, or the old `name`)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    check_ollama_spelling(body)  # the rest of the body goes on to Ollama as it came
    for name in names:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequestError(f"'{name}' must be a non-empty string.", param=name)
            return value.strip()
    raise InvalidRequestError(f"'{names[0]}' is required.", param=names[0])


# --- shared fields ------------------------------------------------------------------------


def _stream(body: Mapping[str, Any]) -> bool:
    """`stream` left out means streaming, as in Ollama."""
    value = body.get("stream")
    if value is None:
        return True
    if not isinstance(value, bool):
        raise InvalidRequestError("'stream' must be true or false.", param="stream")
    return value


def _opt_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a string.", param=name)
    return value


def _keep_alive(body: Mapping[str, Any]) -> None:
    value = body.get("keep_alive")
    if value is None or isinstance(value, str) or (_number(value) and abs(value) < 2**63):
        return
    raise InvalidRequestError(
        "'keep_alive' must be a duration such as \"5m\", or a number of seconds.",
        param="keep_alive",
    )


def _options(raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError("'options' must be an object.", param="options")
    for name, value in raw.items():
        check = _OPTION_TYPES.get(name)
        if value is not None and check is not None and not check[0](value):
            raise InvalidRequestError(
                f"'options.{name}' must be {check[1]}.", param=f"options.{name}"
            )
    return raw


def _sampling(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options the core models, as its fields (what non-Ollama backends receive)."""
    out: dict[str, Any] = {
        name: float(options[name])
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
        if options.get(name) is not None
    }
    num_predict = options.get("num_predict")
    if num_predict is not None and num_predict > 0:  # -1 and -2 mean no limit
        out["max_tokens"] = num_predict
    if options.get("seed") is not None:
        out["seed"] = options["seed"]
    if options.get("stop"):
        out["stop"] = tuple(s for s in options["stop"] if s)
    return out


def _format(raw: Any) -> Mapping[str, Any] | None:
    if raw is None or raw == "":
        return None
    if raw == "json":
        return {"type": "json_object"}
    if isinstance(raw, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": raw}}
    raise InvalidRequestError("'format' must be \"json\" or a JSON schema object.", param="format")


def _think(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or raw in THINK_LEVELS:
        return THINK_EFFORT[raw]
    raise InvalidRequestError(
        f"'think' must be true, false, or one of {', '.join(map(repr, THINK_LEVELS))}.",
        param="think",
    )


def _native(body: Mapping[str, Any], modelled: tuple[str, ...]) -> dict[str, Any]:
    """The body's other fields, checked where Relay knows their type, kept as they came."""
    check_ollama_spelling(body)  # sent on as they came: no `ſtream` beside Relay's `stream`
    _keep_alive(body)
    for name in ("truncate", "shift", "logprobs"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequestError(f"'{name}' must be true or false.", param=name)
    top = body.get("top_logprobs")
    if top is not None and (not _int(top) or not 0 <= top <= 20):
        raise InvalidRequestError(
            "'top_logprobs' must be an integer between 0 and 20.", param="top_logprobs"
        )
    return {k: v for k, v in body.items() if k not in modelled and v is not None}
