"""Dify conversation memory: which Dify conversation continues a given OpenAI history.

OpenAI clients resend the whole history on every call; Dify keeps it server side. After each
reply Relay records digest(history + reply) -> conversation id; the next request's history up to
its newest user turn has that digest, so only the newest user text needs to go to Dify. Edited
or branched histories simply miss and start a new conversation (docs/design.md §8.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from services.core.types import Message
from services.state.kv_store import Budget

# Entries are a 64-character digest and a conversation id, so a fixed budget holds about
# 100,000 of them per worker; ids longer than Dify's UUIDs are not remembered at all.
CONVERSATION_MEMORY = Budget(max_bytes=32 * 1024 * 1024)
MAX_CONVERSATION_ID_CHARS = 128


def rememberable(conversation_id: str) -> bool:
    """Tell whether an upstream conversation id is sane enough to keep."""
    return 0 < len(conversation_id) <= MAX_CONVERSATION_ID_CHARS


def history_key(scope: str, messages: Sequence[Message]) -> str:
    """Digest a history within a scope (backend, app, key, user).

    System messages are left out: Dify apps carry their own prompt, and clients that stamp the
    date into the system message would otherwise never find their conversation again. Text is
    compared with whitespace collapsed, since some clients trim what they send back.
    """
    digest = hashlib.sha256(scope.encode())
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        digest.update(b"\x1e" + m.role.encode() + b"\x1f" + " ".join(m.text().split()).encode())
        for url in m.image_urls():
            digest.update(b"\x1d" + hashlib.sha256(url.encode()).digest())
    return digest.hexdigest()


def transcript(messages: Sequence[Message]) -> str:
    """Render a whole history as one query, the way Dify's own compatibility plugin does."""
    return "\n\n".join(f"{m.role.upper()}:\n{m.text()}" for m in messages if m.text())
