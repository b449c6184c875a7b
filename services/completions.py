"""Legacy completions use cases: route the prompts to a backend, run them whole or streamed.

Several prompts run one after the other on the same backend; a stream carries each delta with
the index of its prompt.
"""

from __future__ import annotations

from collections.abc import Generator

from services.backends.base import Backend
from services.completions_format import CompletionRequest
from services.gateway import Gateway
from services.types import CallContext, ChatDelta, ChatResult


def complete(
    gw: Gateway, req: CompletionRequest, ctx: CallContext
) -> tuple[Backend, list[ChatResult]]:
    """Continue every prompt whole on the backend that serves the model."""
    backend = gw.router.resolve(req.model, ctx)
    return backend, [backend.complete_text(p, ctx) for p in req.prompts]


def stream(
    gw: Gateway, req: CompletionRequest, ctx: CallContext
) -> tuple[Backend, Generator[tuple[int, ChatDelta], None, None]]:
    """Start streaming the prompts; the first delta is pulled now so errors come before headers."""
    backend = gw.router.resolve(req.model, ctx)
    first = backend.stream_text(req.prompts[0], ctx)
    try:
        head = next(first, None)
    except BaseException:
        first.close()
        raise
    return backend, _run(backend, req, ctx, head, first)


def _run(
    backend: Backend,
    req: CompletionRequest,
    ctx: CallContext,
    head: ChatDelta | None,
    current: Generator[ChatDelta, None, None],
) -> Generator[tuple[int, ChatDelta], None, None]:
    # A plain generator with finally, so close() reaches the upstream at once when the client
    # goes away (DESIGN §8.6).
    try:
        if head is not None:
            yield 0, head
        for delta in current:
            yield 0, delta
        for index in range(1, len(req.prompts)):
            current.close()
            current = backend.stream_text(req.prompts[index], ctx)
            for delta in current:
                yield index, delta
    finally:
        current.close()
