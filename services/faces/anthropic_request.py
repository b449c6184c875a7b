"""Pure parsing of Anthropic Messages API requests into core types. No I/O.

Errors name the caller's own fields the way Anthropic does (`messages.0.content.1.source`).
What is accepted, dropped and mapped is described in docs/anthropic.md "Mapping decisions".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.core.errors import InvalidRequestError
from services.core.types import ChatRequest, ContentPart, Message, ToolCall
from services.core.usage_estimate import chat_prompt_tokens, text_tokens
from services.faces.chat_request import image_url, not_int, requested_model

# The first system block Claude Code sends starts with this line; it changes on every request
# (docs/anthropic.md "The billing block").
BILLING_PREFIX = "x-anthropic-billing-header:"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
# A rough size of one image in tokens for count_tokens (docs/anthropic.md "count_tokens").
IMAGE_TOKENS = 1024


def _error(path: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"{path}: {problem}", param=path)


def parse_messages_request(body: Any, keep_billing_block: bool = False) -> ChatRequest:
    """Validate a POST /v1/messages body and turn it into a core ChatRequest."""
    return _parse(body, keep_billing_block, count_only=False)


def parse_count_tokens_request(body: Any, keep_billing_block: bool = False) -> ChatRequest:
    """The same body without `max_tokens` (POST /v1/messages/count_tokens)."""
    return _parse(body, keep_billing_block, count_only=True)


def _parse(body: Any, keep_billing_block: bool, count_only: bool) -> ChatRequest:
    model = requested_model(body)
    max_tokens = body.get("max_tokens")
    if count_only:
        max_tokens = None
    elif max_tokens is None:
        raise _error("max_tokens", "Field required")
    elif not_int(max_tokens) or not 1 <= max_tokens < 2**63:
        raise _error("max_tokens", "must be a positive integer")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise _error("messages", "Field required and must be an array")
    if not raw_messages:
        raise _error("messages", "must contain at least one message")
    messages = _system(body.get("system"), keep_billing_block)
    for i, raw in enumerate(raw_messages):
        messages.extend(_message(raw, f"messages.{i}", keep_billing_block))
    if not any(m.role != "system" for m in messages):
        raise _error("messages", "must contain a user or assistant message with content")
    tools = _tools(body.get("tools"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _error("stream", "must be true or false")
    extra: dict[str, Any] = {}
    top_k = body.get("top_k")
    if top_k is not None:
        if not_int(top_k) or not 0 <= top_k < 2**31:
            raise _error("top_k", "must be a non-negative integer")
        extra["top_k"] = top_k
    choice, parallel = _tool_choice(body.get("tool_choice"))
    if parallel is False and tools:
        extra["parallel_tool_calls"] = False
    output_config = _object(body, "output_config")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=bool(stream) and not count_only,
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=tools,
        tool_choice=choice if tools else None,
        response_format=_output_format(output_config),
        reasoning_effort=_reasoning_effort(body.get("thinking"), output_config),
        user=_user(body.get("metadata")),
        extra=extra,
    )


def _object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(name, "must be an object")
    return value


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _error(name, f"must be a number between {lo} and {hi}")
    return float(v)


def _stop_sequences(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _error("stop_sequences", "must be an array of strings")
    return tuple(s for s in raw if s)


def _user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _error("metadata", "must be an object")
    user_id = metadata.get("user_id")
    if user_id is None:
        return None
    if not isinstance(user_id, str):
        raise _error("metadata.user_id", "must be a string")
    return user_id or None


# --- system and messages ---------------------------------------------------------------------


def _texts(raw: Any, path: str) -> list[str]:
    """A string, or an array of text blocks (as `system` and system messages carry)."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise _error(path, "must be a string or an array of text blocks")
    texts = []
    for j, block in enumerate(raw):
        at = f"{path}.{j}"
        if not isinstance(block, dict):
            raise _error(at, "must be an object")
        if block.get("type") != "text":
            raise _error(f"{at}.type", "only text blocks are allowed here")
        texts.append(_text(block, at))
    return texts


def _without_billing(texts: list[str], keep: bool) -> list[str]:
    """Drop Claude Code's per-request billing line, which defeats the backend's prompt cache."""
    if keep:
        return texts
    out = []
    for text in texts:
        if text.lstrip().startswith(BILLING_PREFIX):
            text = text.lstrip().partition("\n")[2]
        if text:
            out.append(text)
    return out


def _system(raw: Any, keep_billing: bool) -> list[Message]:
    if raw is None:
        return []
    texts = _without_billing(_texts(raw, "system"), keep_billing)
    joined = "\n\n".join(t for t in texts if t)
    return [Message(role="system", content=joined)] if joined else []


def _text(block: Mapping[str, Any], at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _error(f"{at}.text", "Field required and must be a string")
    return text


def _message(raw: Any, at: str, keep_billing: bool) -> list[Message]:
    """One Anthropic message as core messages: tool results first, each its own tool message."""
    if not isinstance(raw, dict):
        raise _error(at, "must be an object")
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        raise _error(f"{at}.role", f"must be 'user', 'assistant' or 'system'; got {role!r}")
    content = raw.get("content")
    if role == "system":  # mid-conversation system messages (Claude Code sends them)
        texts = _without_billing(_texts(content, f"{at}.content"), keep_billing)
        joined = "\n\n".join(t for t in texts if t)
        return [Message(role="system", content=joined)] if joined else []
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    if not isinstance(content, list):
        raise _error(f"{at}.content", "must be a string or an array of content blocks")
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    thinking: list[str] = []
    for j, block in enumerate(content):
        where = f"{at}.content.{j}"
        if not isinstance(block, dict):
            raise _error(where, "must be an object")
        kind = block.get("type")
        if kind == "text":
            parts.append(ContentPart(type="text", text=_text(block, where)))
        elif kind == "image":
            parts.append(_image(block.get("source"), f"{where}.source"))
        elif kind == "document":
            parts.append(ContentPart(type="text", text=_document(block, where)))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, where, len(calls)))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result(block, where))
        elif kind == "thinking":
            text = block.get("thinking")
            if isinstance(text, str) and text and role == "assistant":
                thinking.append(text)
        elif kind in ("tool_use", "tool_result"):
            raise _error(f"{where}.type", f"{kind} blocks belong in {_owner(kind)} messages")
        elif not isinstance(kind, str):
            raise _error(f"{where}.type", "Field required")
        # Anything else (redacted thinking, server-tool uses and results, container uploads,
        # newer block types) carries nothing a chat model can use: dropped, never refused.
    out = list(results)
    content_out: str | tuple[ContentPart, ...] | None
    if all(p.type == "text" for p in parts):
        content_out = "\n".join(p.text for p in parts)
    else:
        content_out = tuple(parts)
    if role == "assistant":
        if parts or calls or thinking:
            out.append(
                Message(
                    role="assistant",
                    content=content_out or (None if calls else ""),
                    tool_calls=tuple(calls),
                    reasoning="\n".join(thinking) or None,
                )
            )
    elif parts or not results:
        out.append(Message(role="user", content=content_out))
    return out


def _owner(kind: str) -> str:
    return "assistant" if kind == "tool_use" else "user"


def _image(source: Any, at: str) -> ContentPart:
    if not isinstance(source, dict):
        raise _error(at, "Field required and must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_TYPES:
            raise _error(f"{at}.media_type", f"must be one of {', '.join(IMAGE_TYPES)}")
        if not isinstance(data, str) or not data:
            raise _error(f"{at}.data", "Field required and must be base64 text")
        return ContentPart(type="image", url=f"data:{media_type};base64,{data}")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _error(f"{at}.url", "must be an http(s) URL")
        return ContentPart(type="image", url=image_url(url, f"{at}.url"))
    raise _error(f"{at}.type", "must be 'base64' or 'url' (Relay has no Files API)")


def _document(block: Mapping[str, Any], at: str) -> str:
    """A plain-text document as text; PDFs and files cannot reach a chat model."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _error(f"{at}.source", "Field required and must be an object")
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        text: str = source["data"]
    elif kind == "content" and isinstance(source.get("content"), str | list):
        text = _flatten(source["content"], f"{at}.source.content")
    else:
        raise _error(
            f"{at}.source.type",
            "only text documents ('text' or 'content' sources) are supported, not PDFs or files",
        )
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _flatten(raw: str | list[Any], at: str) -> str:
    if isinstance(raw, str):
        return raw
    texts = []
    for j, block in enumerate(raw):
        if not isinstance(block, dict):
            raise _error(f"{at}.{j}", "must be an object")
        if block.get("type") == "text":
            texts.append(_text(block, f"{at}.{j}"))
    return "\n".join(texts)


def _tool_use(block: Mapping[str, Any], at: str, index: int) -> ToolCall:
    call_id, name, tool_input = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise _error(f"{at}.id", "Field required and must be a string")
    if not isinstance(name, str) or not name:
        raise _error(f"{at}.name", "Field required and must be a string")
    if not isinstance(tool_input, dict):
        raise _error(f"{at}.input", "must be an object")
    arguments = json.dumps(tool_input, ensure_ascii=False)
    return ToolCall(id=call_id, name=name, arguments=arguments, index=index)


def _tool_result(block: Mapping[str, Any], at: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _error(f"{at}.tool_use_id", "Field required and must be a string")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _error(f"{at}.is_error", "must be true or false")
    raw = block.get("content", "")
    parts: list[ContentPart] = []
    if isinstance(raw, str):
        parts.append(ContentPart(type="text", text=raw))
    elif isinstance(raw, list):
        for j, item in enumerate(raw):
            where = f"{at}.content.{j}"
            if not isinstance(item, dict):
                raise _error(where, "must be an object")
            kind = item.get("type")
            if kind == "text":
                parts.append(ContentPart(type="text", text=_text(item, where)))
            elif kind == "image":
                parts.append(_image(item.get("source"), f"{where}.source"))
            elif kind == "document":
                parts.append(ContentPart(type="text", text=_document(item, where)))
            elif kind == "search_result":
                parts.append(ContentPart(type="text", text=_search_result(item, where)))
    elif raw is not None:
        raise _error(f"{at}.content", "must be a string or an array of content blocks")
    if is_error:  # chat has no error flag for a tool result: the model reads it in the text
        parts.insert(0, ContentPart(type="text", text="Error:"))
    content: str | tuple[ContentPart, ...]
    if all(p.type == "text" for p in parts):
        content = "\n".join(p.text for p in parts)
    else:
        content = tuple(parts)
    return Message(role="tool", content=content, tool_call_id=call_id)


def _search_result(block: Mapping[str, Any], at: str) -> str:
    content = block.get("content")
    body = _flatten(content, f"{at}.content") if isinstance(content, str | list) else ""
    title = block.get("title")
    return f"{title}\n{body}" if isinstance(title, str) and title else body


# --- tools and thinking ------------------------------------------------------------------------


def _tools(raw: Any) -> tuple[Mapping[str, Any], ...]:
    """Custom tools as chat function tools; server tools and deferred tools never reach a model."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _error("tools", "must be an array")
    out: list[Mapping[str, Any]] = []
    for i, tool in enumerate(raw):
        at = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _error(at, "must be an object")
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web_search_..., bash_...): Anthropic runs those, Relay cannot
        if tool.get("defer_loading") is True:
            continue  # loaded on demand by the client's tool search; not callable yet
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _error(f"{at}.name", "Field required and must be a string")
        if not isinstance(schema, dict):
            raise _error(f"{at}.input_schema", "Field required and must be an object")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        out.append({"type": "function", "function": function})
    return tuple(out)


def _tool_choice(raw: Any) -> tuple[str | Mapping[str, Any] | None, bool | None]:
    """The chat tool_choice and whether parallel calls are allowed (None: not said)."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise _error("tool_choice", "must be an object")
    kind = raw.get("type")
    parallel = raw.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _error("tool_choice.disable_parallel_tool_use", "must be true or false")
    allowed = None if parallel is None else not parallel
    if kind == "auto":
        return "auto", allowed
    if kind == "any":
        return "required", allowed
    if kind == "none":
        return "none", allowed
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _error("tool_choice.name", "Field required and must be a string")
        return {"type": "function", "function": {"name": name}}, allowed
    raise _error("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")


def budget_effort(budget: int) -> str:
    """A thinking budget in tokens as a reasoning effort level."""
    if budget >= 4096:
        return "high"
    if budget >= 2048:
        return "medium"
    if budget >= 1024:
        return "low"
    return "minimal"


def _reasoning_effort(thinking: Any, output_config: Mapping[str, Any]) -> str | None:
    effort = output_config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _error("output_config.effort", f"must be one of {', '.join(EFFORTS)}")
    if thinking is None:
        return effort
    if not isinstance(thinking, dict):
        raise _error("thinking", "must be an object")
    kind = thinking.get("type")
    if kind == "disabled":
        return "none"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise _error("thinking.budget_tokens", "Field required and must be a positive integer")
        return effort or budget_effort(budget)
    if not isinstance(kind, str):
        raise _error("thinking.type", "Field required")
    return effort  # adaptive (and newer kinds): the model decides, at this effort if given


def _output_format(output_config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = output_config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _error("output_config.format.type", "must be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _error("output_config.format.schema", "Field required and must be an object")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def estimate_input_tokens(req: ChatRequest) -> int:
    """count_tokens: the chat prompt estimate, plus the tools' JSON and a flat size per image."""
    tools = sum(text_tokens(json.dumps(t, ensure_ascii=False)) for t in req.tools)
    images = sum(len(m.image_urls()) for m in req.messages) * IMAGE_TOKENS
    return chat_prompt_tokens(req) + tools + images
