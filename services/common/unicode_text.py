"""Lone UTF-16 surrogates: valid in JSON text (`"\\ud800"`), but not Unicode characters.

Python's JSON parser reads `"\\ud800"` (or the bytes ED A0 80) into a str holding a lone
surrogate, which cannot be written as UTF-8: a reply, log record or stored entry echoing it
failed (a 500, a stream cut off). Requests holding one are refused where they are parsed, and
Relay's JSON writers escape any that still come (from an upstream) as `\\udXXX`, which JSON
readers accept (docs/threat-model.md "Bad input on the wire").
"""

from __future__ import annotations

import json
import re

from services.core.errors import InvalidRequestError

_SURROGATE = re.compile("[\ud800-\udfff]")
# In UTF-8 JSON text a surrogate can only come from an escape (\\uD800-\\uDFFF) or from the
# bytes ED A0-BF .., which Python's parser lets through.
_SURROGATE_IN_JSON = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def may_hold_surrogates(data: bytes) -> bool:
    """False when JSON bytes cannot parse to a string holding a surrogate, so the walk of
    check_no_lone_surrogates can be skipped (one C-speed search instead of a Python walk)."""
    return json.detect_encoding(data) != "utf-8" or _SURROGATE_IN_JSON.search(data) is not None


def check_no_lone_surrogates(value: object) -> None:
    """Raise a 400 when any string (or object key) in a parsed JSON value is not Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                raise InvalidRequestError(
                    "The request body holds a lone UTF-16 surrogate (such as \\ud800), "
                    "which is not Unicode text."
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def escape_surrogates(text: str) -> str:
    """JSON text with any lone surrogate written as its `\\uXXXX` escape, so UTF-8 can hold it.

    In JSON output a surrogate can only stand inside a string, where the escape means the same.
    """
    if text.isascii():
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
