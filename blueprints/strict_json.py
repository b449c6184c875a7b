"""Flask's JSON rendering, refusing to write NaN or Infinity, which are not JSON.

Python's json writes them by default; a client's parser then fails on a 200 reply. Inputs are
checked where they enter (json_body, the backends' readers); this is the last guard, so a
number that slipped through is a logged 500 in OpenAI's envelope, never invalid JSON
(docs/api.md "Errors").
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

from services.common.unicode_text import escape_surrogates


class StrictJSONProvider(DefaultJSONProvider):
    sort_keys = False  # replies keep OpenAI's field order
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        # A lone surrogate (from an upstream) cannot be written as UTF-8: escape it instead.
        return escape_surrogates(super().dumps(obj, **kwargs))
