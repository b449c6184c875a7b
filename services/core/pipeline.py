"""The core pipeline every face calls, knowing nothing of HTTP or of any wire format.

authorise the model for the key → resolve the route once and check the key's budgets
(`open_call`) → cache policy → for each target the route allows (docs/routing.md): backpressure
slot → backend call → one collector for whole results → a typed outcome. A face builds one `Call`
and gets back an `Outcome` (a whole result) or a `Streamed` (a primed stream of deltas); both name
the backend and target that answered, the cache status and the response headers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from loguru import logger

from services.access.keys import ApiKey, authorize_model
from services.backends.base import Backend
from services.common.log_setup import cut, one_field
from services.core.collector import recording
from services.core.errors import GatewayError, UpstreamUnavailableError
from services.core.gateway import Gateway
from services.core.routes import Route, Target, fallback_reason
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
    route it resolved to (once, in `open_call`): the targets it may try, in order."""

    key: ApiKey
    ctx: CallContext
    policy: CachePolicy
    route: Route

    @property
    def backend(self) -> Backend:
        """The backend of the first target (the only one, unless the name is a group)."""
        return self.route.primary.backend


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A whole result on its way up."""

    backend: str
    result: T
    cache: str | None = None  # HIT, MISS or BYPASS; None when the cache was not asked
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Usage | None = None  # the tokens used, when the use case counts them
    route: str | None = None  # the target that answered (`backend/model`); None: the cache


@dataclass(frozen=True, slots=True)
class Streamed(Generic[D]):
    """A primed stream on its way up: its first item was pulled, so errors came before it; the
    headers are known before the first byte of the reply is sent."""

    backend: str
    deltas: Iterator[D]  # closing it (when it has close()) reaches the upstream at once
    cache: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    route: str | None = None  # the target that produced the first delta; None: the cache
    source: Streamed[Any] | None = None  # what `deltas` were rendered from (`framed`)

    def framed(self, frames: Iterator[E]) -> Streamed[E]:
        """The same outcome with its deltas rendered by a face (into frames); whoever reads
        the frames calls `close()` when they end or are abandoned."""
        return Streamed(self.backend, frames, self.cache, self.headers, self.route, self)

    def close(self) -> None:
        """Close the frames, then the deltas they were rendered from.

        A face may stop reading at the reply's last delta (Anthropic's `message_stop`); the
        backend's stream must then release its upstream connection (and its slot) at once,
        not when the garbage collector finds the suspended generator. Not a generator
        wrapped around the frames: each generator level a held stream is suspended in costs
        its greenlet a copy of that level's C stack (docs/design.md §4.6).
        """
        close = getattr(self.deltas, "close", None)
        if close is not None:
            close()
        if self.source is not None:
            self.source.close()


def cacheable(route: Route, ctx: CallContext, policy: CachePolicy) -> CachePolicy:
    """The policy narrowed to what this call allows: a caller's own upstream key or
    conversation makes the answer theirs alone, and stateful backends are never cached."""
    stateless = all(t.backend.type in STATELESS_BACKENDS for t in route.targets)
    if stateless and not ctx.upstream_key and not ctx.conversation_id:
        return policy
    return dataclasses.replace(policy, read=False, store=False)


def open_call(gw: Gateway, model: str, key: ApiKey, ctx: CallContext, policy: CachePolicy) -> Call:
    """Authorise the model for the key, resolve its route (a request's only resolution) and
    check the key's budgets: every face passes here before any backend call, so a spent budget
    refuses them all alike (docs/access.md "Budgets")."""
    authorize_model(key, model)
    route = gw.router.resolve(model, ctx)
    check_budgets(gw, key, ctx.request_id)
    return Call(key, ctx, cacheable(route, ctx, policy), route)


def attempt(gw: Gateway, call: Call, work: Callable[[Target], T]) -> tuple[Target, T]:
    """Run `work` on the route's targets in order until one succeeds, within the retry budget
    (RELAY_ROUTE_MAX_ATTEMPTS targets, no new one after RELAY_ROUTE_DEADLINE_SECONDS). Only
    failures `fallback_reason` names move on; a target whose circuit is open is skipped
    (docs/routing.md "Fallbacks")."""
    route, health, budget = call.route, gw.router.health, gw.settings.routes
    asked = cut(one_field(route.requested))  # the caller's name (a glob alias matched it)
    started = time.monotonic()
    tried, skipped = 0, 0
    last: GatewayError | None = None
    for index, target in enumerate(route.targets):
        if tried >= budget.max_attempts or (
            tried and time.monotonic() - started >= budget.deadline
        ):
            logger.warning(
                "route {}: key={} stops after {} attempt(s) ({})",
                asked,
                call.ctx.key_name,
                tried,
                "attempts" if tried >= budget.max_attempts else "deadline",
            )
            break
        if route.is_group and not health.admit(target):
            skipped += 1
            logger.info("route {}: {} skipped, its circuit is open", asked, target.name)
            continue
        tried += 1
        try:
            result = work(target)
        except GatewayError as e:
            e.backend = target.backend.name  # the access log and metrics name it
            reason = fallback_reason(e) if route.is_group else None
            if target.configured and health.failed(target, reason):
                logger.warning("route target {} failing: circuit open", target.name)
                gw.metrics.route_circuit_opened.labels(target.name).inc()
            if reason is None or index == len(route.targets) - 1:
                raise
            last = e
            logger.warning(
                "route {}: key={} attempt {} on {} failed ({}: {}); trying the next target",
                asked,
                call.ctx.key_name,
                tried,
                target.name,
                reason,
                e.status,
            )
            gw.metrics.route_fallbacks.labels(reason).inc()
            continue
        except BaseException:
            health.failed(target, None)  # ends a probe; says nothing of the target's health
            raise
        if target.configured and health.succeeded(target):
            logger.warning("route target {} answered: circuit closed", target.name)
        if tried > 1 or skipped:
            logger.info("route {}: answered by {}", asked, target.name)
        return target, result
    if last is not None:
        raise last
    error = UpstreamUnavailableError(
        f"Every target of `{route.requested}` is failing; try again shortly.",
        retry_after=health.retry_after(route.targets),
    )
    error.backend = route.primary.backend.name
    raise error


def check_budgets(gw: Gateway, key: ApiKey, request_id: str) -> None:
    """Refuse the request (429 insufficient_quota) when a budget of the key is spent; else it
    counts against them until its usage record is written. `open_call` and the pass-through
    (the one backend call that has no `Call`) check here."""
    if gw.budgets is not None:
        gw.budgets.admit(key.name, key.budgets, request_id)


def run(
    gw: Gateway,
    call: Call,
    make_key: Callable[[Target], str],
    codec: Codec[T],
    work: Callable[[Target], T],
) -> Outcome[T]:
    """Run a whole call on the route's targets, each in its backend's slot, or answer it from
    the cache (keyed on the route's first configured target)."""
    answered: list[Target] = []

    def on(target: Target) -> T:
        with (
            gw.gates.slot(target.backend.name, call.ctx.key_name),
            gw.router.health.attempt(target),
        ):
            return work(target)

    def compute() -> T:
        target, result = attempt(gw, call, on)
        answered.append(target)
        return result

    result, status = gw.cache.run(lambda: make_key(call.route.keyed), call.policy, compute, codec)
    target = answered[0] if answered else call.route.keyed
    return Outcome(
        target.backend.name, result, status, route=answered[0].name if answered else None
    )


def stream(
    gw: Gateway, call: Call, open_stream: Callable[[Target], Generator[D, None, None]]
) -> tuple[Target, D | None, Generator[D, None, None]]:
    """Start the stream on the route's targets in order: each takes its backend's slot and
    its first item is pulled now, so errors (and fallbacks) come before any header. Returns
    the target that started, that first item (None for an empty stream) and the whole stream,
    which holds the slot until it is closed."""

    def on(target: Target) -> tuple[D | None, Generator[D, None, None]]:
        hold = ExitStack()  # the backend's in-flight slot, held until the stream closes
        try:
            hold.enter_context(gw.gates.slot(target.backend.name, call.ctx.key_name))
            hold.enter_context(gw.router.health.attempt(target))
            items = open_stream(target)
            try:
                first: D | None = next(items)
            except StopIteration:
                first = None
            except BaseException:
                items.close()
                raise
        except BaseException:
            hold.close()
            raise
        return first, _primed(first, items, hold)

    target, (first, deltas) = attempt(gw, call, on)
    return target, first, deltas


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
    cache_id: Callable[[Target], str],
    codec: Codec[ChatResult],
    open_stream: Callable[[Target], Generator[ChatDelta, None, None]],
) -> Streamed[ChatDelta]:
    """A streamed chat turn: a cached reply replayed, or a live one that fills the cache."""
    keyed, policy = call.route.keyed, call.policy
    used = gw.cache.enabled and (policy.read or policy.store)
    key = cache_id(keyed) if used else ""
    if gw.cache.enabled and policy.read:
        hit = gw.cache.get(key)
        if hit is not None:
            return Streamed(keyed.backend.name, replay(codec.decode(hit)), HIT)
    target, first, deltas = stream(gw, call, open_stream)
    status = MISS if gw.cache.enabled and policy.read else BYPASS
    if gw.cache.enabled and policy.store:

        def store(result: ChatResult) -> None:
            if codec.storable(result):
                gw.cache.put(key, codec.encode(result))

        deltas = recording(deltas, store)
    headers = first.headers if first is not None and first.headers else NO_HEADERS
    return Streamed(target.backend.name, deltas, status, headers, target.name)
