"""Chat use cases: route a request to its backend, run it whole or as a primed stream."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import ExitStack

from services.backends.base import Backend
from services.errors import GatewayError
from services.gateway import Gateway
from services.types import CallContext, ChatDelta, ChatRequest, ChatResult
from services.usage_estimate import chat_prompt_tokens, complete_usage, fill_usage


def complete(gw: Gateway, req: ChatRequest, ctx: CallContext) -> tuple[Backend, ChatResult]:
    """Run a whole chat turn on the backend that serves the model."""
    backend = gw.router.resolve(req.model, ctx)
    try:
        with gw.gates.slot(backend.name, ctx.key_name):
            result = backend.chat(req, ctx)
        return backend, complete_usage(result, chat_prompt_tokens(req))
    except GatewayError as e:
        e.backend = backend.name
        raise


def stream(
    gw: Gateway, req: ChatRequest, ctx: CallContext
) -> tuple[Backend, Generator[ChatDelta, None, None]]:
    """Start a streamed turn; its first delta is pulled now so errors come before headers."""
    backend = gw.router.resolve(req.model, ctx)
    hold = ExitStack()  # the backend's in-flight slot, held until the stream closes
    try:
        hold.enter_context(gw.gates.slot(backend.name, ctx.key_name))
        deltas = fill_usage(backend.stream_chat(req, ctx), chat_prompt_tokens(req))
        try:
            first = next(deltas)
        except StopIteration:
            first = None
        except BaseException:
            deltas.close()
            raise
    except BaseException as e:
        hold.close()
        if isinstance(e, GatewayError):
            e.backend = backend.name
        raise
    return backend, _primed(first, deltas, hold)


def _primed(
    first: ChatDelta | None, rest: Generator[ChatDelta, None, None], hold: ExitStack
) -> Generator[ChatDelta, None, None]:
    # A plain generator (not itertools.chain) so close() reaches the upstream at once when the
    # client goes away (docs/design.md §4.2).
    try:
        if first is not None:
            yield first
        yield from rest
    finally:
        rest.close()
        hold.close()
