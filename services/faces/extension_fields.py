"""Type checks for the optional request fields Relay or its backends read with an assumed type.

Fields Relay does not model travel in a request's `extra`, but some of them a backend reads
itself (Dify's `inputs` and `conversation_id`, Ollama's `options`, `keep_alive`, `raw` and
`truncate`) or an upstream would refuse when mistyped (`user`, `metadata`, `store`, ...). Each
is checked when the request is parsed, so a wrong type is a 400 naming the field rather than
a crash (a 500) or an upstream's error (a 502) later (docs/api.md "Errors").

Ollama's model options sent as top-level fields (`num_ctx`, `top_k`, ..., `think`, `format`;
Open WebUI sends them so on an OpenAI connection) are checked only by the Ollama backend, which
reads them (OLLAMA_CHAT_FIELDS): an OpenAI-compatible upstream gets them untouched, as before.

A null is the same as leaving the field out, as OpenAI treats it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from services.common.finite_numbers import is_finite_number
from services.core.errors import InvalidRequestError

# OpenAI's limits for `metadata`: up to 16 pairs, keys up to 64 and values up to 512 characters.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_object(v: Any) -> bool:
    return isinstance(v, dict)


def _is_duration(v: Any) -> bool:
    # Ollama's keep_alive: a duration such as "5m", or seconds as a number.
    return isinstance(v, str) or (is_finite_number(v) and abs(v) < 2**63)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is_think(v: Any) -> bool:
    return isinstance(v, bool) or v in THINK_LEVELS


def _is_format(v: Any) -> bool:
    return v == "json" or isinstance(v, dict)


def _is_top_logprobs(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 20


def _is_metadata(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and len(v) <= METADATA_PAIRS
        and all(len(k) <= METADATA_KEY_CHARS for k in v)
        and all(isinstance(x, str) and len(x) <= METADATA_VALUE_CHARS for x in v.values())
    )


THINK_LEVELS = ("low", "medium", "high", "max")
_INT = (_is_int, "an integer that fits in 64 bits")
_NUMBER = (is_finite_number, "a number")
_BOOL = (_is_bool, "true or false")

# Ollama's model options (docs/design.md §7.2), by the type Ollama reads: as top-level
# fields they are moved into `options`. mirostat, mirostat_eta, mirostat_tau, tfs_z and
# use_mlock are no longer read by current Ollama (it ignores them with a warning in its log),
# but older versions still honour them, so they are passed on too.
OLLAMA_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_ctx": _INT,
    "num_keep": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "num_thread": _INT,
    "top_k": _INT,
    "repeat_last_n": _INT,
    "mirostat": _INT,
    "min_p": _NUMBER,
    "typical_p": _NUMBER,
    "repeat_penalty": _NUMBER,
    "mirostat_eta": _NUMBER,
    "mirostat_tau": _NUMBER,
    "tfs_z": _NUMBER,
    "use_mmap": _BOOL,
    "use_mlock": _BOOL,
}

_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "user": (_is_str, "a string"),
    "metadata": (
        _is_metadata,
        f"an object of at most {METADATA_PAIRS} string values (keys up to "
        f"{METADATA_KEY_CHARS} characters, values up to {METADATA_VALUE_CHARS})",
    ),
    "store": (_is_bool, "true or false"),
    "parallel_tool_calls": (_is_bool, "true or false"),
    "logprobs": (_is_bool, "true or false"),
    "top_logprobs": (_is_top_logprobs, "an integer between 0 and 20"),
    # Dify
    "conversation_id": (_is_str, "a string (a Dify conversation id)"),
    "inputs": (_is_object, "an object of the Dify app's input variables"),
    # Ollama
    "options": (_is_object, "an object of Ollama model options"),
    "keep_alive": (_is_duration, 'a duration such as "5m", or a number of seconds'),
    "raw": (_is_bool, "true or false"),
    "truncate": (_is_bool, "true or false"),
    # Ollama, read by its backend only (OLLAMA_CHAT_FIELDS)
    **OLLAMA_OPTIONS,
    "think": (_is_think, 'true, false, "low", "medium", "high" or "max"'),
    "format": (_is_format, '"json" or a JSON schema object'),
}

# Which fields each request type reads or passes on; the rest of _CHECKS do not apply there.
CHAT_FIELDS = (
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "conversation_id",
    "inputs",
    "options",
    "keep_alive",
    "raw",
    "truncate",
)
COMPLETION_FIELDS = tuple(n for n in CHAT_FIELDS if n not in ("logprobs", "top_logprobs"))
OLLAMA_CHAT_FIELDS = (*OLLAMA_OPTIONS, "think", "format")
EMBEDDING_FIELDS = ("user", "options", "keep_alive", "truncate")
IMAGE_FIELDS = ("user",)
RESPONSES_FIELDS = ("user", "metadata", "store", "parallel_tool_calls")


def check_extension_fields(body: Mapping[str, Any], names: Iterable[str]) -> None:
    """Raise a 400 naming the first of `names` whose value has the wrong type."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        accepts, wanted = _CHECKS[name]
        if not accepts(value):
            raise InvalidRequestError(f"'{name}' must be {wanted}.", param=name)
