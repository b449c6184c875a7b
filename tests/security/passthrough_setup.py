"""The setup several security tests share: one OpenAI-compatible upstream with pass-through on,
behind named keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from tests.fakes.openai_upstream import FakeOpenAI


def serve_chat_upstream() -> Iterator[FakeOpenAI]:
    """A chat-only fake upstream for a fixture to yield from; closed afterwards."""
    fake = FakeOpenAI("chat")
    yield fake
    fake.close()


def passthrough_config(
    directory: Path, upstream: FakeOpenAI, **keys: tuple[str, list[str] | None]
) -> Path:
    """Write relay.toml: the upstream serves gpt-* and passes other /v1 paths through; each key
    is `name=(secret, models or None for every model)`."""
    text = (
        f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\nkey_env = "UP_KEY"\n'
        'models = ["gpt-*"]\npassthrough = true\n'
    )
    for name, (secret, models) in keys.items():
        text += f'\n[keys.{name}]\nhash = "sha256:{hashlib.sha256(secret.encode()).hexdigest()}"\n'
        if models is not None:
            text += "models = [" + ", ".join(f'"{m}"' for m in models) + "]\n"
    path = directory / "relay.toml"
    path.write_text(text)
    return path
