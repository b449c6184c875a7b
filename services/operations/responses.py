"""Responses API use cases: run a Responses request through the chat core, keep stored replies.

Stored responses make previous_response_id work: each keeps the conversation it ended as core
messages (input and output, without its instructions, which OpenAI does not carry over) and the
Response object that GET /v1/responses/<id> returns (services/state/response_store.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from services.core.errors import GatewayError, InvalidRequestError, NotFoundError
from services.core.gateway import Gateway
from services.core.pipeline import Call, Outcome, Streamed
from services.core.types import ChatRequest, Message, StreamStats, new_id
from services.faces.chat_request import parse_message
from services.faces.responses_reply import (
    ResponseEvents,
    assistant_message,
    output_items,
    render_response,
    status_of,
)
from services.faces.responses_request import ResponsesRequest
from services.operations import chat
from services.state.message_records import MalformedRecord
from services.state.reply_cache import CachePolicy
from services.state.response_store import StoredResponse


def retrieve(gw: Gateway, response_id: str, owner: str) -> dict[str, Any]:
    """Return a Response object this key stored, or raise a 404."""
    stored = _stored(gw, response_id, owner)
    if stored is None:
        raise NotFoundError(f"No stored response with id '{response_id}'.", param="response_id")
    return stored.response


def delete(gw: Gateway, response_id: str, owner: str) -> dict[str, Any]:
    """Delete a Response this key stored, or raise a 404."""
    if not gw.responses.delete(response_id, owner, _upgrade_history):
        raise NotFoundError(f"No stored response with id '{response_id}'.", param="response_id")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


def create(gw: Gateway, call: Call, rreq: ResponsesRequest) -> Outcome[dict[str, Any]]:
    """Run a whole Responses request; the outcome holds the Response object."""
    ctx = call.ctx
    history, req = _chat_request(gw, rreq, ctx.key_name)
    with _responses_params():
        out = chat.complete(gw, call, req)
    result = out.result
    rid, created = new_id("resp_"), int(time.time())
    output = output_items(result)
    response = render_response(
        rreq,
        rid,
        created,
        status=status_of(result.finish_reason),
        output=output,
        usage=result.usage,
    )
    _store(gw, rreq, ctx.key_name, history, response)
    return Outcome(out.backend, response, None, out.headers, result.usage, out.route)


def stream(gw: Gateway, call: Call, rreq: ResponsesRequest, stats: StreamStats) -> Streamed[bytes]:
    """Start a streamed Responses request, framed; errors before the first delta raise here."""
    owner = call.ctx.key_name
    history, req = _chat_request(gw, rreq, owner)
    with _responses_params():
        out = chat.stream(gw, call, req)
    events = ResponseEvents(rreq, stats, lambda final: _store(gw, rreq, owner, history, final))
    # Responses never use the reply cache: no cache status, as for a whole response.
    return dataclasses.replace(out.framed(events.frames(out.deltas)), cache=None)


def uncached(policy: CachePolicy) -> CachePolicy:
    """Responses are stored by id (previous_response_id), never answered from the cache."""
    return dataclasses.replace(policy, read=False, store=False)


# The chat fields a Responses request's own fields became, for errors naming them.
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text"}


@contextmanager
def _responses_params() -> Iterator[None]:
    """An upstream's error about a chat field names the Responses field the caller sent."""
    try:
        yield
    except GatewayError as e:
        # messages[i] counts history and instructions too: it names `input` as a whole.
        head = (e.param or "").partition("[")[0].partition(".")[0]
        if head in _PARAMS:
            e.param = _PARAMS[head]
        raise


def _chat_request(
    gw: Gateway, rreq: ResponsesRequest, owner: str
) -> tuple[tuple[Message, ...], ChatRequest]:
    """The conversation so far with this turn's input, and the core request for this turn."""
    history: tuple[Message, ...] = ()
    if rreq.previous_response_id:
        stored = _stored(gw, rreq.previous_response_id, owner)
        if stored is None:
            raise NotFoundError(
                f"Previous response with id '{rreq.previous_response_id}' not found.",
                param="previous_response_id",
            )
        history = stored.messages
        # Each stored turn holds the whole conversation: refuse to grow one past the cap
        # rather than store ever larger records (store=false may still continue it).
        if rreq.store and not gw.responses.may_continue((*history, *rreq.messages)):
            raise InvalidRequestError(
                "The conversation is too long to store: continuing it from "
                f"'{rreq.previous_response_id}' would exceed "
                f"{gw.responses.max_conversation_bytes} bytes. Start a new conversation, "
                "or send store=false.",
                param="previous_response_id",
                code="conversation_too_long",
            )
    return (*history, *rreq.messages), rreq.chat_request(history)


def _stored(gw: Gateway, response_id: str, owner: str) -> StoredResponse | None:
    """The stored response, None when it is missing, expired, another key's or malformed."""
    return gw.responses.get(response_id, owner, _upgrade_history)


def _upgrade_history(history: list[Any]) -> tuple[Message, ...]:
    """Upgrade path: the chat-format history of a record written before core message records.

    Such records may still be in Redis for a TTL after an upgrade; they are read through the
    chat face once, and the turn that continues one is stored as core messages. Remove this
    when no record can be older than the upgrade (RELAY_RESPONSE_TTL after it).
    """
    try:
        return tuple(parse_message(m, "input") for m in history)
    except InvalidRequestError as e:
        raise MalformedRecord("history: not chat-format messages") from e


def _store(
    gw: Gateway,
    rreq: ResponsesRequest,
    owner: str,
    history: tuple[Message, ...],
    response: dict[str, Any],
) -> None:
    if not rreq.store or response["status"] == "failed":
        return
    turn = (*history, assistant_message(response["output"]))
    if not gw.responses.put(response["id"], owner, turn, response):
        # Larger than the key's whole budget: a later previous_response_id or GET of this id
        # gets the usual 404 (docs/threat-model.md).
        logger.warning("response {} not stored: larger than its byte budget", response["id"])
