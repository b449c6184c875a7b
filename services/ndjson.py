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
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)
