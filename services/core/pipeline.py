"""The core pipeline every face calls, knowing nothing of HTTP or of any wire format.

authorise the model for the key → resolve the route once and check the key's budgets
(`open_call`) → cache policy → backpressure slot → backend call → one collector for whole
results → a typed outcome.
A face builds one `Call` and gets back an `Outcome` (a whole result) or a `Streamed` (a primed
stream of deltas); both name the backend, the cache status and the response headers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.access.keys import ApiKey, authorize_model
from services.backends.base import Backend
from services.core.collector import recording
from services.core.errors import GatewayError
from services.core.gateway import Gateway
from services.core.types import CallContext, ChatDelta, ChatResult, Usage, result_deltas
from services.state.reply_cache import BYPASS, HIT, MISS, CachePolicy, Codec

T = TypeVar("T")
D = TypeVar("D")
E = TypeVar("E")

# Backends whose answer depends on the request alone. A Dify app keeps conversation state
# upstream, so a reply from the cache would skip a turn it must see; its replies are not cached.
STATELESS_BACKENDS = ("ollama", "openai")

NO_HEADERS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class Call:
    """One request on its way down: who asks, in what context, what the cache may do, and the
    backend the route resolved to (once, in `open_call`)."""

    key: ApiKey
    ctx: CallContext
    policy: CachePolicy
    backend: Backend


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A whole result on its way up."""

    backend: str
    result: T
    cache: str | None = None  # HIT, MISS or BYPASS; None when the cache was not asked
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Usage | None = None  # the tokens used, when the use case counts them


@dataclass(frozen=True, slots=True)
class Streamed(Generic[D]):
    """A primed stream on its way up: its first item was pulled, so errors came before it; the
    headers are known before the first byte of the reply is sent."""

    backend: str
    deltas: Iterator[D]  # closing it (when it has close()) reaches the upstream at once
    cache: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def framed(self, frames: Iterator[E]) -> Streamed[E]:
        """The same outcome with its deltas rendered by a face (into frames)."""
        return Streamed(self.backend, frames, self.cache, self.headers)


def cacheable(backend: Backend, ctx: CallContext, policy: CachePolicy) -> CachePolicy:
    """The policy narrowed to what this call allows: a caller's own upstream key or
    conversation makes the answer theirs alone, and stateful backends are never cached."""
    if backend.type in STATELESS_BACKENDS and not ctx.upstream_key and not ctx.conversation_id:
        return policy
    return dataclasses.replace(policy, read=False, store=False)


def open_call(gw: Gateway, model: str, key: ApiKey, ctx: CallContext, policy: CachePolicy) -> Call:
    """Authorise the model for the key, resolve its route (a request's only resolution) and
    check the key's budgets: every face passes here before any backend call, so a spent budget
    refuses them all alike (docs/access.md "Budgets")."""
    authorize_model(key, model)
    backend = gw.router.resolve(model, ctx)
    check_budgets(gw, key, ctx.request_id)
    return Call(key, ctx, cacheable(backend, ctx, policy), backend)


def check_budgets(gw: Gateway, key: ApiKey, request_id: str) -> None:
    """Refuse the request (429 insufficient_quota) when a budget of the key is spent; else it
    counts against them until its usage record is written. `open_call` and the pass-through
    (the one backend call that has no `Call`) check here."""
    if gw.budgets is not None:
        gw.budgets.admit(key.name, key.budgets, request_id)


def run(
    gw: Gateway,
    call: Call,
    make_key: Callable[[Backend], str],
    codec: Codec[T],
    work: Callable[[Backend], T],
) -> Outcome[T]:
    """Run a whole call in the backend's slot, or answer it from the cache."""
    backend = call.backend

    def compute() -> T:
        with gw.gates.slot(backend.name, call.ctx.key_name):
            return work(backend)

    try:
        result, status = gw.cache.run(lambda: make_key(backend), call.policy, compute, codec)
    except GatewayError as e:
        e.backend = backend.name  # the access log and metrics name it
        raise
    return Outcome(backend.name, result, status)


def stream(
    gw: Gateway, call: Call, open_stream: Callable[[Backend], Generator[D, None, None]]
) -> tuple[D | None, Generator[D, None, None]]:
    """Take the backend's slot and start its stream; its first item is pulled now so errors
    come before any header. Returns that first item (None for an empty stream) and the whole
    stream, which holds the slot until it is closed."""
    backend = call.backend
    hold = ExitStack()  # the backend's in-flight slot, held until the stream closes
    try:
        hold.enter_context(gw.gates.slot(backend.name, call.ctx.key_name))
        items = open_stream(backend)
        try:
            first: D | None = next(items)
        except StopIteration:
            first = None
        except BaseException:
            items.close()
            raise
    except BaseException as e:
        hold.close()
        if isinstance(e, GatewayError):
            e.backend = backend.name
        raise
    return first, _primed(first, items, hold)


def _primed(
    first: D | None, rest: Generator[D, None, None], hold: ExitStack
) -> Generator[D, None, None]:
    # A plain generator (not itertools.chain) so close() reaches the upstream at once when the
    # client goes away (docs/design.md §4.2).
    try:
        if first is not None:
            yield first
        yield from rest
    finally:
        rest.close()
        hold.close()


def replay(result: ChatResult) -> Generator[ChatDelta, None, None]:
    """Turn a stored reply back into deltas, so it streams with a live stream's framing."""
    yield from result_deltas(result)


def cached_stream(
    gw: Gateway,
    call: Call,
    cache_id: Callable[[], str],
    codec: Codec[ChatResult],
    open_stream: Callable[[Backend], Generator[ChatDelta, None, None]],
) -> Streamed[ChatDelta]:
    """A streamed chat turn: a cached reply replayed, or a live one that fills the cache."""
    name, policy = call.backend.name, call.policy
    used = gw.cache.enabled and (policy.read or policy.store)
    key = cache_id() if used else ""
    if gw.cache.enabled and policy.read:
        hit = gw.cache.get(key)
        if hit is not None:
            return Streamed(name, replay(codec.decode(hit)), HIT)
    first, deltas = stream(gw, call, open_stream)
    status = MISS if gw.cache.enabled and policy.read else BYPASS
    if gw.cache.enabled and policy.store:

        def store(result: ChatResult) -> None:
            if codec.storable(result):
                gw.cache.put(key, codec.encode(result))

        deltas = recording(deltas, store)
    headers = first.headers if first is not None and first.headers else NO_HEADERS
    return Streamed(name, deltas, status, headers)
