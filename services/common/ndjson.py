"""Incremental decoding of newline-delimited JSON (Ollama's stream format). No I/O of its own."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def iter_ndjson(chunks: Iterable[bytes]) -> Iterator[Any]:
    """Yield one parsed object per complete line; a trailing partial line raises ValueError."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield loads(line)
    if buffer.strip():
        yield loads(buffer)


def loads(text: bytes | str) -> Any:
    """Parse JSON; nesting too deep for the parser is a ValueError like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:  # e.g. a line of 100,000 "[": not a reason to crash the stream
        raise ValueError("JSON nested too deeply") from None
