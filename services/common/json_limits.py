"""How deep a request's JSON may nest: far beyond any real request, far below the point where
re-encoding it for a backend (or echoing it) would overflow Python's stack."""

from __future__ import annotations

MAX_JSON_DEPTH = 128


def nested_deeper_than(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Tell whether a parsed JSON value nests objects and arrays deeper than `limit`."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
