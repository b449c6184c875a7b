"""Pure parsing of OpenAI Chat Completions requests into core types. No I/O.

parse_* validate and raise InvalidRequestError naming the OpenAI `param`; the opt_* helpers
do the same for single fields and serve the other request parsers too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.core.errors import InvalidRequestError
from services.core.types import (
    ChatRequest,
    ContentPart,
    Message,
    ToolCall,
)
from services.faces.extension_fields import CHAT_FIELDS, check_extension_fields

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# Request fields parse_chat_request reads itself; everything else lands in ChatRequest.extra.
_KNOWN = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
    "reasoning",
    "user",
    "n",
}


# --- parsing ------------------------------------------------------------------------------


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat request body and turn it into a ChatRequest."""
    model = requested_model(body)
    check_extension_fields(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array.", param="messages")
    n = body.get("n")
    if n is not None and (not_int(n) or n != 1):
        raise InvalidRequestError(
            "Only n=1 is supported: Relay returns one choice per request.", param="n"
        )
    stream = opt_bool(body, "stream") or False
    include_usage = parse_include_usage(body)
    # Both limits given: the smaller one holds for both names.
    limits = {
        name: value
        for name in ("max_tokens", "max_completion_tokens")
        if (value := opt_int(body, name, lo=1)) is not None
    }
    max_tokens = min(limits.values()) if limits else None
    user = body.get("user")
    return ChatRequest(
        model=model,
        messages=tuple(parse_message(m, f"messages[{i}]") for i, m in enumerate(messages)),
        stream=stream,
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        max_tokens_names=tuple(limits) or ("max_tokens",),
        stop=parse_stop(body.get("stop")),
        seed=opt_int(body, "seed"),
        presence_penalty=opt_number(body, "presence_penalty", -2, 2),
        frequency_penalty=opt_number(body, "frequency_penalty", -2, 2),
        tools=_parse_tools(body.get("tools")),
        tool_choice=_parse_tool_choice(body.get("tool_choice")),
        response_format=_parse_response_format(body.get("response_format")),
        reasoning_effort=_parse_reasoning_effort(body),
        user=user or None,
        include_usage=include_usage,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def parse_message(raw: Any, where: str) -> Message:
    """Parse one chat-format message; errors name `where` (such as messages[0])."""
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where)
    role = raw.get("role")
    if role not in ROLES:
        raise InvalidRequestError(
            f"'{where}.role' must be one of {', '.join(ROLES)}; got {role!r}.",
            param=f"{where}.role",
        )
    tool_calls = _parse_tool_calls(raw.get("tool_calls"), where) if role == "assistant" else ()
    content = raw.get("content")
    if content is None:
        if role not in ("assistant", "tool"):
            raise InvalidRequestError(f"'{where}.content' is required.", param=f"{where}.content")
        parsed: str | tuple[ContentPart, ...] | None = None
    elif isinstance(content, str):
        parsed = content
    elif isinstance(content, list):
        parsed = tuple(_parse_part(p, f"{where}.content[{j}]") for j, p in enumerate(content))
    else:
        raise InvalidRequestError(
            f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content"
        )
    reasoning = raw.get("reasoning_content", raw.get("reasoning"))
    name = raw.get("name")
    tool_call_id = raw.get("tool_call_id")
    for field_name, value in (("name", name), ("tool_call_id", tool_call_id)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(
                f"'{where}.{field_name}' must be a string.", param=f"{where}.{field_name}"
            )
    return Message(
        role=role,
        content=parsed,
        name=name if isinstance(name, str) else None,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id if isinstance(tool_call_id, str) else None,
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
    )


def _parse_part(raw: Any, where: str) -> ContentPart:
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where)
    kind = raw.get("type")
    if kind in ("text", "input_text", "output_text", "refusal"):
        text = raw.get("text", raw.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequestError(f"'{where}.text' must be a string.", param=f"{where}.text")
        return ContentPart(type="text", text=text)
    if kind == "image_url":
        image = raw.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return ContentPart(type="image", url=image_url(url, f"{where}.image_url.url"))
    raise InvalidRequestError(
        f"Content parts of type {kind!r} are not supported; use 'text' or 'image_url'.",
        param=f"{where}.type",
    )


def image_url(url: Any, param: str) -> str:
    """Check an image given by URL: a base64 data: URL of an image, or http(s)."""
    if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
        raise InvalidRequestError(f"'{param}' must be a data: URL or an http(s) URL.", param=param)
    if url.startswith("data:") and (";base64," not in url or not url[5:].startswith("image/")):
        raise InvalidRequestError(
            f"'{param}' must be a base64 image, like data:image/png;base64,...", param=param
        )
    return url


def _parse_tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
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
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(
                f"'{at}.function.name' is required.", param=f"{at}.function.name"
            )
        arguments = fn.get("arguments", "")
        if isinstance(arguments, dict):  # lenient: some clients send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise InvalidRequestError(
                f"'{at}.function.arguments' must be a JSON string.",
                param=f"{at}.function.arguments",
            )
        call_id = call.get("id")
        calls.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) else "",
                name=fn["name"],
                arguments=arguments,
                index=j,
            )
        )
    return tuple(calls)


def parse_include_usage(body: Mapping[str, Any]) -> bool:
    """Read `stream_options.include_usage`: an object holding a boolean, when given."""
    stream_options = body.get("stream_options")
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise InvalidRequestError("'stream_options' must be an object.", param="stream_options")
    include_usage = stream_options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise InvalidRequestError(
            "'stream_options.include_usage' must be true or false.",
            param="stream_options.include_usage",
        )
    return include_usage is True


def parse_stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw else ()
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return tuple(s for s in raw if s)
    raise InvalidRequestError("'stop' must be a string or an array of strings.", param="stop")


def _parse_tools(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequestError("'tools' must be an array.", param="tools")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequestError(
                f'\'tools[{i}]\' must be {{"type": "function", "function": {{...}}}}; '
                "other tool types are not supported.",
                param=f"tools[{i}]",
            )
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequestError(
                f"'tools[{i}].function.name' is required.", param=f"tools[{i}].function.name"
            )
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise InvalidRequestError(
                f"'tools[{i}].function.parameters' must be an object.",
                param=f"tools[{i}].function.parameters",
            )
    return tuple(raw)


def _parse_tool_choice(raw: Any) -> str | Mapping[str, Any] | None:
    if raw is None or raw in ("none", "auto", "required"):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, dict) and raw.get("type") == "function":
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return raw
    raise InvalidRequestError(
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        param="tool_choice",
    )


def _parse_response_format(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return raw  # type: ignore[no-any-return]
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequestError(
                "'response_format.json_schema.schema' must be an object.",
                param="response_format.json_schema",
            )
        return raw  # type: ignore[no-any-return]
    raise InvalidRequestError(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
        param="response_format",
    )


def _parse_reasoning_effort(body: Mapping[str, Any]) -> str | None:
    effort = body.get("reasoning_effort")
    param = "reasoning_effort"
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort, param = reasoning.get("effort"), "reasoning.effort"
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise InvalidRequestError(
            f"'{param}' must be one of {', '.join(REASONING_EFFORTS)}.", param=param
        )
    return effort  # type: ignore[no-any-return]


def requested_model(body: Any) -> str:
    """Check that the body is a JSON object naming a model; return the model name."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string.", param="model"
        )
    return model.strip()


def not_int(v: Any) -> bool:
    return isinstance(v, bool) or not isinstance(v, int)


def opt_bool(body: Mapping[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise InvalidRequestError(f"'{name}' must be true or false.", param=name)
    return v


def opt_int(
    body: Mapping[str, Any], name: str, lo: int | None = None, hi: int | None = None
) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    # Beyond 64 bits no backend can read the number; without a bound of its own it fails there.
    low = -(2**63) if lo is None else lo
    high = 2**63 - 1 if hi is None else hi
    if not_int(v) or v < low or v > high:
        more = f" of at least {lo}" if lo is not None else ""
        more += f" and at most {hi}" if hi is not None else ""
        more += "" if hi is not None else " that fits in 64 bits"
        raise InvalidRequestError(f"'{name}' must be an integer{more}.", param=name)
    return v  # type: ignore[no-any-return]


def opt_number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InvalidRequestError(f"'{name}' must be a number between {lo} and {hi}.", param=name)
    return float(v)
