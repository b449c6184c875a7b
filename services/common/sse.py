"""Incremental decoding of Server-Sent Events (Dify's stream format). No I/O of its own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from services.common.ndjson import loads


def iter_sse(chunks: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """Yield (event name, data) per event; events without data (Dify's pings) are skipped."""
    buffer = b""
    name, data = "", list[str]()
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                if data:
                    yield name or "message", "\n".join(data)
                name, data = "", []
            elif line.startswith(":"):
                continue  # a comment
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "data":
                    data.append(value)
                elif field == "event":
                    name = value
    if data:  # a last event without its blank line
        yield name or "message", "\n".join(data)


def iter_sse_json(chunks: Iterable[bytes]) -> Iterator[Any]:
    """Yield each SSE event's data parsed as JSON; bad JSON raises ValueError."""
    for _name, data in iter_sse(chunks):
        yield loads(data)
