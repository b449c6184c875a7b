"""Top-level request fields as a case-insensitive JSON reader sees them.

Go's encoding/json (Ollama's OpenAI-compatible API, LocalAI and other Go servers) matches an
object key to a field without regard to case, folding Unicode too ("ſ" reads as "s", the
Kelvin sign as "k"), and of two keys that match one field keeps the last. Relay reads keys
exactly. So a body whose top-level keys differ only in case, or that spells `model` any other
way, would be checked by Relay as one request and run upstream as another (another model, or
streamed when Relay expects one reply): such a body is a 400 (docs/threat-model.md
"Bad input on the wire").
"""

from __future__ import annotations

from collections.abc import Iterable

from services.core.errors import InvalidRequestError


def folded(name: str) -> str:
    """A key as a case-insensitive reader compares it (Go's encoding/json folding)."""
    return "".join(c.lower().upper() for c in name)


def check_top_level_keys(keys: Iterable[str]) -> None:
    """Raise a 400 when two keys read as one field, or `model` is spelled another way."""
    seen: dict[str, str] = {}
    for key in keys:
        fold = folded(key)
        if fold == "MODEL" and key != "model":
            raise InvalidRequestError(
                f"The field {key[:40]!r} reads as `model` to some servers; spell it `model`.",
                param="model",
            )
        if fold in seen:
            raise InvalidRequestError(
                f"The fields {seen[fold][:40]!r} and {key[:40]!r} differ only in case; "
                "some servers read them as one field.",
                param=key[:40],
            )
        seen[fold] = key


def check_ollama_spelling(keys: Iterable[str]) -> None:
    """Raise a 400 for a top-level key Ollama would read as another field than Relay does.

    Every field of Ollama's native API is spelled in lowercase ASCII, and Ollama is a Go server:
    `From`, `ſtream` or `Messages` reach the field `from`, `stream` or `messages` there while
    Relay, reading keys exactly, never checked them (a model outside the key's list under
    `From`). A key must read the same folded as it is sent (docs/threat-model.md "The Ollama
    and Anthropic faces").
    """
    for key in keys:
        plain = folded(key).lower()
        if key != plain:
            raise InvalidRequestError(
                f"The field {key[:40]!r} reads as `{plain[:40]}` to Ollama; spell it "
                f"`{plain[:40]}`.",
                param=key[:40],
            )
