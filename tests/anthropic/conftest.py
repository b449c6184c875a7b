"""The Anthropic face's tests: the official `anthropic` SDK and raw HTTP against the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import requests

from tests.conftest import API_KEY

HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": API_KEY}


@pytest.fixture
def claude(gateway) -> Iterator[anthropic.Anthropic]:
    """The SDK pointed at the shared gateway (no retries, so errors show at once)."""
    with anthropic.Anthropic(base_url=gateway.url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    return requests.post(url, json=body, headers={**HEADERS, **(headers or {})}, timeout=30, **kw)


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split a stream into (event name, data) pairs, checking the framing of every frame."""
    frames = raw.decode().split("\n\n")
    assert frames[-1] == "", "the stream must end with a blank line"
    out = []
    for frame in frames[:-1]:
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name, frame
        out.append((name, data))
    return out


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [n for n, _ in events if n != "ping"]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
