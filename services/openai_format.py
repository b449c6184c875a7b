"""Pure translation between OpenAI Chat Completions JSON and core types. No I/O.

parse_* validate and raise InvalidRequestError naming the OpenAI `param`; render_* cannot fail.
Wire details follow reference/openai-api.md §1 (chunk rules, null vs missing, error frames).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger

from services.errors import GatewayError, InvalidRequestError, UpstreamError
from services.types import (
    REPLACE_SEPARATOR,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ContentPart,
    Message,
    ModelInfo,
    ToolCall,
    Usage,
    new_id,
)

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
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string.", param="model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array.", param="messages")
    n = body.get("n")
    if n is not None and (_not_int(n) or n != 1):
        raise InvalidRequestError(
            "Only n=1 is supported: Relay returns one choice per request.", param="n"
        )
    stream = _opt_bool(body, "stream") or False
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequestError("'stream_options' must be an object.", param="stream_options")
    include_usage = bool(stream_options and stream_options.get("include_usage") is True)
    max_tokens = _opt_int(body, "max_completion_tokens", lo=1)
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens", lo=1)
    user = body.get("user")
    return ChatRequest(
        model=model.strip(),
        messages=tuple(_parse_message(m, i) for i, m in enumerate(messages)),
        stream=stream,
        temperature=_opt_number(body, "temperature", 0, 2),
        top_p=_opt_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=_parse_stop(body.get("stop")),
        seed=_opt_int(body, "seed"),
        presence_penalty=_opt_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_opt_number(body, "frequency_penalty", -2, 2),
        tools=_parse_tools(body.get("tools")),
        tool_choice=_parse_tool_choice(body.get("tool_choice")),
        response_format=_parse_response_format(body.get("response_format")),
        reasoning_effort=_parse_reasoning_effort(body),
        user=user if isinstance(user, str) and user else None,
        include_usage=include_usage,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def _parse_message(raw: Any, i: int) -> Message:
    where = f"messages[{i}]"
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
        if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
            raise InvalidRequestError(
                f"'{where}.image_url.url' must be a data: URL or an http(s) URL.",
                param=f"{where}.image_url.url",
            )
        if url.startswith("data:") and (";base64," not in url or not url[5:].startswith("image/")):
            raise InvalidRequestError(
                f"'{where}.image_url.url' must be a base64 image, like data:image/png;base64,...",
                param=f"{where}.image_url.url",
            )
        return ContentPart(type="image", url=url)
    raise InvalidRequestError(
        f"Content parts of type {kind!r} are not supported; use 'text' or 'image_url'.",
        param=f"{where}.type",
    )


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


def _parse_stop(raw: Any) -> tuple[str, ...]:
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


def _not_int(v: Any) -> bool:
    return isinstance(v, bool) or not isinstance(v, int)


def _opt_bool(body: Mapping[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise InvalidRequestError(f"'{name}' must be true or false.", param=name)
    return v


def _opt_int(body: Mapping[str, Any], name: str, lo: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if _not_int(v) or (lo is not None and v < lo):
        more = f" of at least {lo}" if lo is not None else ""
        raise InvalidRequestError(f"'{name}' must be an integer{more}.", param=name)
    return v  # type: ignore[no-any-return]


def _opt_number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InvalidRequestError(f"'{name}' must be a number between {lo} and {hi}.", param=name)
    return float(v)


# --- rendering ----------------------------------------------------------------------------


def render_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def render_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def render_chat_completion(result: ChatResult, model: str) -> dict[str, Any]:
    """Render a finished turn as an OpenAI chat.completion object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.content if result.content or not result.tool_calls else None,
        "refusal": None,
    }
    if result.tool_calls:
        message["tool_calls"] = [render_tool_call(c) for c in result.tool_calls]
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": render_usage(result.usage),
    }


def render_error_frame(error: GatewayError) -> bytes:
    return b"data: " + _dumps(error.to_dict()) + b"\n\n"


@dataclass(slots=True)
class StreamStats:
    """What a stream did, filled in while it runs and read by the access log when it closes."""

    usage: Usage | None = None
    finish_reason: str | None = None
    error: str | None = None
    chunks: int = 0


def render_chat_stream(
    deltas: Iterator[ChatDelta], model: str, include_usage: bool, stats: StreamStats
) -> Iterator[bytes]:
    """Turn core deltas into encoded SSE frames: role, content, finish, usage, [DONE]."""
    head = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }
    tail = {"usage": None} if include_usage else {}

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        stats.chunks += 1
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _dumps({**head, "choices": [choice], **tail}) + b"\n\n"

    seen_tools: set[int] = set()
    sent_text = False
    try:
        yield frame({"role": "assistant", "content": ""})
        for d in deltas:
            if d.reasoning:
                yield frame({"reasoning_content": d.reasoning})
            if d.content:
                text = REPLACE_SEPARATOR + d.content if d.replace and sent_text else d.content
                sent_text = True
                yield frame({"content": text})
            if d.tool_calls:
                yield frame({"tool_calls": [_tool_delta(c, seen_tools) for c in d.tool_calls]})
            if d.finish_reason is not None:
                stats.finish_reason, stats.usage = d.finish_reason, d.usage
                yield frame({}, d.finish_reason)
                if include_usage:
                    usage = render_usage(d.usage or Usage())
                    yield b"data: " + _dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
        raise UpstreamError("The backend's stream ended before the reply was complete.")
    except GatewayError as e:
        stats.error = e.message
        yield render_error_frame(e)
    except Exception:  # a bug of ours: log it, end the stream with a clean frame
        logger.exception("stream failed")
        stats.error = "internal error"
        yield render_error_frame(GatewayError("Relay failed while streaming the reply."))


def _tool_delta(call: ToolCall, seen: set[int]) -> dict[str, Any]:
    # id, type and name go only in the first delta of each index: the Python SDK's
    # accumulator would otherwise join them ("call_xcall_x"), reference/openai-api §1.3.
    if call.index in seen:
        return {"index": call.index, "function": {"arguments": call.arguments}}
    seen.add(call.index)
    return {"index": call.index, **render_tool_call(call)}


def render_model(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "model", "created": info.created, "owned_by": info.owned_by}


def render_model_list(models: list[ModelInfo]) -> dict[str, Any]:
    return {"object": "list", "data": [render_model(m) for m in models]}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
