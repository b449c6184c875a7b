"""Pure parsing of OpenAI Responses API requests straight into core types. No I/O.

A Responses request is served by the same chat core as /v1/chat/completions: its `input` items
become core messages and its flat fields the core request's, following docs/design.md §6.
Errors name the Responses `param` the caller sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from services.core.errors import InvalidRequestError
from services.core.types import ChatRequest, ContentPart, Message, ToolCall
from services.faces.chat_request import (
    REASONING_EFFORTS,
    image_url,
    opt_bool,
    opt_int,
    opt_number,
    requested_model,
)
from services.faces.extension_fields import RESPONSES_FIELDS, check_extension_fields


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A parsed Responses request: the core chat request it becomes, and what the reply echoes."""

    model: str
    messages: tuple[Message, ...]  # core messages from `input`
    chat: ChatRequest  # every other field as the core takes it (its messages are set per turn)
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    echo: Mapping[str, Any] = field(default_factory=dict)  # request fields the reply repeats

    def chat_request(self, history: tuple[Message, ...] = ()) -> ChatRequest:
        """The core request: instructions, stored history, then this request's input."""
        system = (Message(role="system", content=self.instructions),) if self.instructions else ()
        return dataclasses.replace(self.chat, messages=(*system, *history, *self.messages))


def parse_responses_request(body: Any) -> ResponsesRequest:
    """Validate a Responses request body and parse it straight into core types.

    Errors name the Responses fields the caller sent (`input[0].content[0].image_url`).
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    check_extension_fields(body, RESPONSES_FIELDS)
    model = requested_model(body)
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
    stream = opt_bool(body, "stream") or False
    store = opt_bool(body, "store")
    parallel = opt_bool(body, "parallel_tool_calls")
    chat = ChatRequest(
        model=model,
        messages=(),
        stream=stream,
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        max_tokens=opt_int(body, "max_output_tokens", lo=1),  # sent as max_tokens, most take it
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=_text_format(body.get("text")),
        reasoning_effort=_effort(body.get("reasoning")),
        user=body.get("user") or None,
        extra={} if parallel is None else {"parallel_tool_calls": parallel},
    )
    echo = {
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "text": body.get("text") or {"format": {"type": "text"}},
        "temperature": chat.temperature,
        "top_p": chat.top_p,
        "max_output_tokens": chat.max_tokens,
        "parallel_tool_calls": parallel is not False,
        "reasoning": {"effort": chat.reasoning_effort, "summary": None},
    }
    return ResponsesRequest(
        model=chat.model,
        messages=tuple(messages),
        chat=chat,
        instructions=instructions or None,
        previous_response_id=previous,
        store=store is not False,
        stream=stream,
        metadata=metadata,
        echo=echo,
    )


def _input_messages(raw: Any) -> list[Message]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [Message(role="user", content=raw)]
    if not isinstance(raw, list):
        raise InvalidRequestError("'input' must be a string or an array of items.", param="input")
    out: list[Message] = []
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
            out.append(Message(role=role, content=_content(item.get("content"), where)))
        elif kind == "function_call":
            last = out[-1] if out else None
            parallel = last is not None and last.role == "assistant" and bool(last.tool_calls)
            index = len(last.tool_calls) if last is not None and parallel else 0
            call = ToolCall(
                id=_str(item, "call_id", where),
                name=_str(item, "name", where),
                arguments=_arguments(item, where),
                index=index,
            )
            if last is not None and parallel:  # parallel calls share one assistant turn
                out[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                out.append(Message(role="assistant", content=None, tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, where)
            call_id = _str(item, "call_id", where)
            out.append(Message(role="tool", content=text, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # earlier reasoning is not replayed to chat backends
        else:
            raise InvalidRequestError(
                f"Input items of type {kind!r} are not supported; use messages, function_call "
                "and function_call_output items, or previous_response_id.",
                param=f"{where}.type",
            )
    return out


def _arguments(item: Mapping[str, Any], where: str) -> str:
    arguments = item.get("arguments") or "{}"
    if isinstance(arguments, dict):  # lenient, as for chat: the object itself
        return json.dumps(arguments, ensure_ascii=False)
    if not isinstance(arguments, str):
        raise InvalidRequestError(
            f"'{where}.arguments' must be a JSON string.", param=f"{where}.arguments"
        )
    return arguments


def _content(raw: Any, where: str) -> str | tuple[ContentPart, ...]:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise InvalidRequestError(
            f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content"
        )
    parts: list[ContentPart] = []
    for j, part in enumerate(raw):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            name = "refusal" if kind == "refusal" else "text"
            text = part.get(name)
            if not isinstance(text, str):
                raise InvalidRequestError(f"'{at}.{name}' must be a string.", param=f"{at}.{name}")
            parts.append(ContentPart(type="text", text=text))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(
                ContentPart(type="image", url=image_url(part["image_url"], f"{at}.image_url"))
            )
        else:
            raise InvalidRequestError(
                f"Content parts of type {kind!r} are not supported here; use input_text or "
                "input_image with an image_url.",
                param=f"{at}.type",
            )
    return tuple(parts)


def _text_of(raw: Any, where: str) -> str:
    parts = _content(raw, where)
    return parts if isinstance(parts, str) else "".join(p.text for p in parts)


def _str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"'{where}.{key}' is required.", param=f"{where}.{key}")
    return value


def _tools(raw: Any) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
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
        if "parameters" in tool and not isinstance(tool["parameters"], dict):
            raise InvalidRequestError(
                f"'tools[{i}].parameters' must be an object.", param=f"tools[{i}].parameters"
            )
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        tools.append({"type": "function", "function": function})
    return tuple(tools)


def _tool_choice(raw: Any) -> str | Mapping[str, Any] | None:
    if raw is None or raw in ("none", "auto", "required"):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return {"type": "function", "function": {"name": raw["name"]}}
    raise InvalidRequestError(
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "name": ...}.',
        param="tool_choice",
    )


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
        if not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequestError(
                "'text.format.schema' must be an object.", param="text.format.schema"
            )
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequestError(
        "'text.format.type' must be text, json_object or json_schema.", param="text.format"
    )


def _effort(raw: Any) -> str | None:
    effort = raw.get("effort") if isinstance(raw, dict) else None
    if effort is not None and effort not in REASONING_EFFORTS:
        raise InvalidRequestError(
            f"'reasoning.effort' must be one of {', '.join(REASONING_EFFORTS)}.",
            param="reasoning.effort",
        )
    return effort
