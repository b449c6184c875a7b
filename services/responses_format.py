"""Pure parsing of OpenAI Responses API requests into a chat request body. No I/O.

A Responses request is served by the same chat core as /v1/chat/completions: its `input` items
become chat messages and its flat fields their chat names, following
docs/design.md §6. Errors name the Responses `param`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from services.errors import InvalidRequestError
from services.extension_fields import RESPONSES_FIELDS, check_extension_fields
from services.openai_format import opt_bool, opt_int, opt_number


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A parsed Responses request: the chat body it becomes, and what the reply echoes."""

    model: str
    messages: tuple[Mapping[str, Any], ...]  # chat-format messages from `input`
    chat_fields: Mapping[str, Any]  # everything else of the chat body
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    echo: Mapping[str, Any] = field(default_factory=dict)  # request fields the reply repeats

    def chat_body(self, history: tuple[Mapping[str, Any], ...] = ()) -> dict[str, Any]:
        """Build the chat request: instructions, stored history, then this request's input."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return {
            **self.chat_fields,
            "model": self.model,
            "messages": [*system, *history, *self.messages],
            "stream": self.stream,
        }


def parse_responses_request(body: Any) -> ResponsesRequest:
    """Validate a Responses request body and map it onto chat fields."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    check_extension_fields(body, RESPONSES_FIELDS)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string.", param="model"
        )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequestError("'instructions' must be a string.", param="instructions")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequestError(
            "'previous_response_id' must be a response id.", param="previous_response_id"
        )
    metadata = body.get("metadata") or {}
    for name in ("text", "reasoning"):  # objects at OpenAI; anything else would be dropped
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise InvalidRequestError(f"'{name}' must be an object.", param=name)
    messages = _input_messages(body.get("input"))
    if not messages and not previous:
        raise InvalidRequestError("'input' must not be empty.", param="input")
    tools = _tools(body.get("tools"))
    chat: dict[str, Any] = {
        "temperature": opt_number(body, "temperature", 0, 2),
        "top_p": opt_number(body, "top_p", 0, 1),
        "max_tokens": opt_int(body, "max_output_tokens", lo=1),  # the name most servers take
        "tools": tools or None,
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "response_format": _text_format(body.get("text")),
        "reasoning_effort": _effort(body.get("reasoning")),
        "user": body.get("user") or None,
        "parallel_tool_calls": opt_bool(body, "parallel_tool_calls"),
    }
    stream = opt_bool(body, "stream") or False
    store = opt_bool(body, "store")
    echo = {
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "text": body.get("text") or {"format": {"type": "text"}},
        "temperature": chat["temperature"],
        "top_p": chat["top_p"],
        "max_output_tokens": chat["max_tokens"],
        "parallel_tool_calls": chat["parallel_tool_calls"] is not False,
        "reasoning": {"effort": chat["reasoning_effort"], "summary": None},
    }
    return ResponsesRequest(
        model=model.strip(),
        messages=tuple(messages),
        chat_fields={k: v for k, v in chat.items() if v is not None},
        instructions=instructions or None,
        previous_response_id=previous,
        store=store is not False,
        stream=stream,
        metadata=metadata,
        echo=echo,
    )


def _input_messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidRequestError("'input' must be a string or an array of items.", param="input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"'{where}' must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequestError(
                    f"'{where}.role' must be user, system, developer or assistant.",
                    param=f"{where}.role",
                )
            out.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call = {
                "id": _str(item, "call_id", where),
                "type": "function",
                "function": {
                    "name": _str(item, "name", where),
                    "arguments": item.get("arguments") or "{}",
                },
            }
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls share one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, where)
            out.append(
                {"role": "tool", "tool_call_id": _str(item, "call_id", where), "content": text}
            )
        elif kind == "reasoning":
            continue  # earlier reasoning is not replayed to chat backends
        else:
            raise InvalidRequestError(
                f"Input items of type {kind!r} are not supported; use messages, function_call "
                "and function_call_output items, or previous_response_id.",
                param=f"{where}.type",
            )
    return out


def _content(raw: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise InvalidRequestError(
            f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(raw):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise InvalidRequestError(
                f"Content parts of type {kind!r} are not supported here; use input_text or "
                "input_image with an image_url.",
                param=f"{at}.type",
            )
    return parts


def _text_of(raw: Any, where: str) -> str:
    parts = _content(raw, where)
    return parts if isinstance(parts, str) else "".join(p.get("text") or "" for p in parts)


def _str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"'{where}.{key}' is required.", param=f"{where}.{key}")
    return value


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequestError("'tools' must be an array.", param="tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise InvalidRequestError(f"'tools[{i}]' must be an object.", param=f"tools[{i}]")
        if tool.get("type") != "function":
            # Built-in tools (web_search, file_search, ...) have no chat counterpart.
            logger.debug("responses: skipping built-in tool {}", tool.get("type"))
            continue
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequestError(f"'tools[{i}].name' is required.", param=f"tools[{i}].name")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(raw: Any) -> Any:
    if isinstance(raw, dict) and raw.get("type") == "function":
        return {"type": "function", "function": {"name": raw.get("name")}}
    return raw


def _text_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequestError(
        "'text.format.type' must be text, json_object or json_schema.", param="text.format"
    )


def _effort(raw: Any) -> Any:
    return raw.get("effort") if isinstance(raw, dict) else None
