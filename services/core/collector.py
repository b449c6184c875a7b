"""The one accumulator of streamed chat deltas into a whole reply (core, no HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator

from services.core.errors import UpstreamError
from services.core.types import ChatDelta, ChatResult, ToolCall, Usage


class Collector:
    """The one accumulator of chat deltas into a whole ChatResult.

    Tool calls are merged by `index`: an OpenAI-style stream sends a call's id and name once,
    then its arguments in fragments under the same index; the fragments are joined.
    """

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, ToolCall] = {}
        self.logprobs: dict[str, list[object]] = {}
        self.headers: dict[str, str] = {}

    def add(self, d: ChatDelta) -> ChatResult | None:
        """Take one delta; return the whole result when this delta finishes the turn."""
        for name, items in (d.logprobs or {}).items():  # `content` and `refusal` lists
            if isinstance(items, list):
                self.logprobs.setdefault(name, []).extend(items)
        if d.headers:
            self.headers.update(d.headers)
        if d.replace:  # the content replaces everything said so far
            self.content.clear()
        self.content.append(d.content)
        self.refusal.append(d.refusal)
        self.reasoning.append(d.reasoning)
        for c in d.tool_calls:
            old = self.calls.get(c.index)
            self.calls[c.index] = (
                c
                if old is None
                else dataclasses.replace(old, arguments=old.arguments + c.arguments)
            )
        if d.finish_reason is None:
            return None
        return ChatResult(
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            tool_calls=tuple(self.calls[i] for i in sorted(self.calls)),
            finish_reason=d.finish_reason,
            usage=d.usage or Usage(),
            refusal="".join(self.refusal),
            logprobs=self.logprobs or None,
            headers=self.headers,
        )


def collect(deltas: Iterator[ChatDelta], title: str) -> ChatResult:
    """A whole reply from a stream of deltas; an UpstreamError if it ends before finishing."""
    collector = Collector()
    try:
        for d in deltas:
            result = collector.add(d)
            if result is not None:
                return result
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
    raise UpstreamError(f"{title} ended its reply early.")


def recording(
    deltas: Generator[ChatDelta, None, None], store: Callable[[ChatResult], None]
) -> Generator[ChatDelta, None, None]:
    """Pass a stream on, collecting it; hand the whole reply to `store` only when the stream
    really finished."""
    collector = Collector()
    try:
        for d in deltas:
            result = collector.add(d)
            if result is not None:
                store(result)
            yield d
    finally:
        deltas.close()
