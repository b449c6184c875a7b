"""The setup several security tests share: one OpenAI-compatible upstream with pass-through on,
behind named keys."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import API_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI

LIMITED = "sk-relay-limited-key-0002"  # may use gpt-test only


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


def limited_gateway(
    start: Callable[..., Gateway], upstream: FakeOpenAI, directory: Path
) -> Gateway:
    """A gateway with the upstream, API_KEY for every model and LIMITED for gpt-test only."""
    path = passthrough_config(directory, upstream, limited=(LIMITED, ["gpt-test"]))
    return start({"RELAY_CONFIG": str(path), "RELAY_API_KEYS": API_KEY, "UP_KEY": "up"})
