"""Legacy completions use cases: route the prompts to a backend, run them whole or streamed.

Several prompts run one after the other on the same backend; a stream carries each delta with
the index of its prompt.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Generator
from contextlib import ExitStack

from services.backends.base import Backend
from services.cached_chat import cacheable, result_from_dict
from services.completions_format import CompletionRequest
from services.errors import GatewayError
from services.gateway import Gateway
from services.keys import ApiKey, require_model
from services.reply_cache import CachePolicy, Codec, cache_key
from services.types import CallContext, ChatDelta, ChatResult, TextRequest
from services.unicode_text import escape_surrogates
from services.usage_estimate import complete_usage, fill_usage, text_tokens


def _encode(results: list[ChatResult]) -> bytes:
    text = json.dumps([dataclasses.asdict(r) for r in results], ensure_ascii=False)
    return escape_surrogates(text).encode()  # an upstream's lone surrogate, escaped


def _decode(raw: bytes) -> list[ChatResult]:
    return [result_from_dict(r) for r in json.loads(raw)]


# Replies cut off by the token limit are not stored, as for chat.
COMPLETIONS_CODEC = Codec(_encode, _decode, lambda rs: all(r.finish_reason != "length" for r in rs))


def _payload(req: CompletionRequest) -> dict[str, object]:
    skip = {"user"}
    return {
        "prompts": [
            {k: v for k, v in dataclasses.asdict(p).items() if k not in skip} for p in req.prompts
        ]
    }


def _complete_all(
    gw: Gateway, backend: Backend, req: CompletionRequest, ctx: CallContext
) -> list[ChatResult]:
    with gw.gates.slot(backend.name, ctx.key_name):
        return [complete_usage(backend.complete_text(p, ctx), _prompt(p)) for p in req.prompts]


def _prompt(req: TextRequest) -> int:
    return text_tokens(req.prompt) + text_tokens(req.suffix or "")


def _stream_text(
    backend: Backend, req: TextRequest, ctx: CallContext
) -> Generator[ChatDelta, None, None]:
    return fill_usage(backend.stream_text(req, ctx), _prompt(req))


def complete(
    gw: Gateway, req: CompletionRequest, ctx: CallContext, key: ApiKey, policy: CachePolicy
) -> tuple[Backend, list[ChatResult], str]:
    """Continue every prompt whole, or answer from the cache; also says HIT, MISS or BYPASS."""
    require_model(key, req.model)
    backend = gw.router.resolve(req.model, ctx)
    try:
        results, status = gw.cache.run(
            lambda: cache_key("completions", policy.tenant, backend.name, _payload(req)),
            cacheable(backend, ctx, policy),
            lambda: _complete_all(gw, backend, req, ctx),
            COMPLETIONS_CODEC,
        )
    except GatewayError as e:
        e.backend = backend.name  # the access log and metrics name it, as for chat
        raise
    return backend, results, status


def stream(
    gw: Gateway, req: CompletionRequest, ctx: CallContext, key: ApiKey
) -> tuple[Backend, Generator[tuple[int, ChatDelta], None, None]]:
    """Start streaming the prompts; the first delta is pulled now so errors come before headers."""
    require_model(key, req.model)
    backend = gw.router.resolve(req.model, ctx)
    hold = ExitStack()  # the backend's in-flight slot, held until the stream closes
    try:
        hold.enter_context(gw.gates.slot(backend.name, ctx.key_name))
        first = _stream_text(backend, req.prompts[0], ctx)
        try:
            head = next(first, None)
        except BaseException:
            first.close()
            raise
    except BaseException as e:
        hold.close()
        if isinstance(e, GatewayError):
            e.backend = backend.name  # the access log and metrics name it, as for chat
        raise
    return backend, _run(backend, req, ctx, head, first, hold)


def _run(
    backend: Backend,
    req: CompletionRequest,
    ctx: CallContext,
    head: ChatDelta | None,
    current: Generator[ChatDelta, None, None],
    hold: ExitStack,
) -> Generator[tuple[int, ChatDelta], None, None]:
    # A plain generator with finally, so close() reaches the upstream at once when the client
    # goes away (docs/design.md §4.2).
    try:
        if head is not None:
            yield 0, head
        for delta in current:
            yield 0, delta
        for index in range(1, len(req.prompts)):
            current.close()
            current = _stream_text(backend, req.prompts[index], ctx)
            for delta in current:
                yield index, delta
    finally:
        current.close()
        hold.close()
