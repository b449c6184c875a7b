"""Which /v1 paths may pass through to the upstream, judged on the bytes the caller sent.

A path is forwarded only when it is plain: segments of ordinary characters, no percent
escapes, no dot segments, no empty segments. Then nothing between Relay and the upstream
(the WSGI server's decoding, urllib3's dot-segment removal, the upstream's own router) can
read it as another path, so the upstream receives exactly the path that was checked
(docs/backends.md "Pass-through of everything else").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from services.core.errors import InvalidRequestError, NotFoundError

PREFIX = "/v1/"

# Unreserved characters and a few harmless sub-delimiters; no "%" (no escapes to decode
# differently), no "\\" (a separator to some servers), no ";" (path parameters to others).
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@+,=-]+")

# Relay answers these itself, with keys' model lists, token charging and the reply cache;
# no spelling of them, nor anything beneath them, goes to the upstream unchecked.
SERVED = (
    ("chat", "completions"),
    ("completions",),
    ("embeddings",),
    ("responses",),
    ("images", "generations"),
    ("models",),
)


def raw_path(environ: Mapping[str, Any]) -> str:
    """The path as it came on the request line (gunicorn's RAW_URI), query cut off."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str):
        # A server that keeps no raw form: judge the decoded path, which is no laxer.
        raw = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    return raw.split("?", 1)[0]


def checked_path(environ: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    """Return the path under /v1 to forward (without the "/v1/"), or raise a 400 or 404."""
    raw = raw_path(environ)
    mount = str(environ.get("SCRIPT_NAME", ""))  # gunicorn's SCRIPT_NAME, when mounted below /
    if not raw.startswith(mount + PREFIX) or raw != mount + str(environ.get("PATH_INFO", "")):
        # Percent escapes, an absolute-form target, anything the server rewrote.
        raise InvalidRequestError(_refusal(raw), code="invalid_path")
    rest = raw[len(mount + PREFIX) :]
    segments = rest.split("/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or set(segment) == {"."}:
            raise InvalidRequestError(_refusal(raw), code="invalid_path")
    if _served(segments):
        raise NotFoundError(f"Relay serves /v1/{rest} itself; it is not passed through.")
    if allowed and not any(fnmatchcase(rest, glob) for glob in allowed):
        raise NotFoundError(f"The path /v1/{rest} is not passed through on this gateway.")
    return rest


# Model-generating routes some upstreams also serve below a model or deployment name, the model
# then taken from the path, not the body: LiteLLM's /v1/engines/{model}/chat/completions and
# /openai/deployments/{model}/chat/completions, OpenAI's legacy /v1/engines/{model}/completions.
# These are refused wherever in the path they appear; `engines` (the legacy model list) too.
ANYWHERE = tuple(route for route in SERVED if route != ("models",)) + (("engines",),)


def _served(segments: list[str]) -> bool:
    # Compared as a lenient upstream might read them: any case, trailing dots dropped.
    loose = tuple(s.lower().rstrip(".") for s in segments)
    if any(loose[: len(route)] == route for route in SERVED):
        return True
    return any(
        loose[start : start + len(route)] == route
        for route in ANYWHERE
        for start in range(len(loose))
    )


def _refusal(raw: str) -> str:
    shown = raw.encode("ascii", "backslashreplace").decode()[:200]
    return (
        f"The path {shown!r} cannot be passed through: use plain segments of letters, digits "
        "and -._~:@+,= only, without percent escapes, dot segments or empty segments."
    )
