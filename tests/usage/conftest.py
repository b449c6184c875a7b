"""Helpers for the usage ledger's tests: a gateway writing to its own SQLite file, and reading
the ledger back over HTTP (/admin/usage, /v1/usage), with the CLI and straight from the file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from services.access.keys import digest
from tests.conftest import API_KEY, ROOT, wait_until

OTHER_KEY = "sk-relay-test-key-0002"
ADMIN_TOKEN = "relay-admin-token-for-usage-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def key_name(secret: str) -> str:
    """The name Relay gives a key from RELAY_API_KEYS."""
    return f"env-{digest(secret)[:8]}"


def ledger_env(db: Path | str, ollama_url: str, **extra: str) -> dict[str, str]:
    """A gateway's environment; `db` is a SQLite file, or a database URL."""
    return {
        "OLLAMA_BASE_URL": ollama_url,
        "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "RELAY_DATABASE_URL": db if isinstance(db, str) else f"sqlite:///{db}",
        "RELAY_USAGE_FLUSH_SECONDS": "0.05",
        "RELAY_METRICS_TOKEN": ADMIN_TOKEN,
        # Loopback is not an allowed address here: only the admin token opens /admin/usage.
        "RELAY_METRICS_ALLOW": "192.0.2.1/32",
        "RELAY_CACHE_TTL": "300",
        "RELAY_CACHE_MODE": "all",  # the chats here sample: cached only in this mode
        **extra,
    }


def chat(gw: Any, key: str = API_KEY, **body: Any) -> requests.Response:
    # A new question each time: the reply cache is on, and a repeated one would be a HIT.
    # Temperature 0 makes the reply cacheable (docs/access.md "Which replies are cached").
    question = [{"role": "user", "content": f"Say hi {uuid.uuid4()}"}]
    payload = {"model": "llama3.2", "messages": question, "temperature": 0, **body}
    return requests.post(
        gw.url + "/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def admin_records(gw: Any, **params: str) -> list[dict[str, Any]]:
    r = requests.get(gw.url + "/admin/usage/records", params=params, headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def record_of(gw: Any, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The one ledger record of a request, once the writer has written it."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = admin_records(gw, request_id=request_id)
        return bool(found)

    wait_until(written, timeout=timeout)
    assert len(found) == 1, found
    return found[0]


def db_rows(db: Path, sql: str = "SELECT * FROM usage_records") -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql))


def run_cli(db: Path | str, *args: str, usage: str = "on") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RELAY_ENV_FILE": "",
        "RELAY_DATABASE_URL": db if isinstance(db, str) else f"sqlite:///{db}",
        "RELAY_USAGE": usage,
    }
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "usage", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- many requests at once, of every kind --------------------------------------------------

PROMPT, COMPLETION, EMBED_PROMPT = 11, 2, 4  # what the fake reports for each kind


def script_mixed(ollama: Any) -> None:
    """The fake's answers for `mixed_traffic`: a chat model, an embedding model, and a model
    whose upstream fails (Relay answers 502)."""
    ollama.script("llama3.2", content=["a", "b"], prompt_eval_count=PROMPT, eval_count=COMPLETION)
    ollama.script("nomic-embed-text")
    ollama.script("broken-model", status=500, error="the upstream broke")


KINDS = ("chat", "stream", "embed", "bad_request", "upstream_error")
EXPECTED_STATUS = {
    "chat": 200,
    "stream": 200,
    "embed": 200,
    "bad_request": 400,
    "upstream_error": 502,
}


def one_request(url: str, kind: str, key: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    question = [{"role": "user", "content": f"Say hi {uuid.uuid4()}"}]
    if kind == "embed":
        body: dict[str, Any] = {"model": "nomic-embed-text", "input": "four words of input"}
        return requests.post(url + "/v1/embeddings", json=body, headers=headers, timeout=60)
    body = {"model": "llama3.2", "messages": question, "stream": kind == "stream"}
    if kind == "bad_request":
        body["messages"] = "not a list"
    if kind == "upstream_error":
        body["model"] = "broken-model"
    return requests.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def mixed_traffic(urls: list[str], count: int, threads: int = 32) -> dict[str, int]:
    """`count` concurrent requests spread over the gateways: chat whole and streamed,
    embeddings, a bad request (400) and an upstream failure (502), from two keys. Each answer's
    status is checked; returns the sums the ledger must then hold."""

    def one(i: int) -> str:
        kind = KINDS[i % len(KINDS)]
        r = one_request(urls[i % len(urls)], kind, API_KEY if i % 2 else OTHER_KEY)
        assert r.status_code == EXPECTED_STATUS[kind], (kind, r.status_code, r.text)
        return kind

    with ThreadPoolExecutor(threads) as pool:
        kinds = list(pool.map(one, range(count)))
    chats = kinds.count("chat") + kinds.count("stream")
    embeds = kinds.count("embed")
    return {
        "requests": count,
        "errors": kinds.count("bad_request") + kinds.count("upstream_error"),
        "streamed": kinds.count("stream"),
        "prompt_tokens": chats * PROMPT + embeds * EMBED_PROMPT,
        "completion_tokens": chats * COMPLETION,
    }


def admin_total(url: str) -> dict[str, Any]:
    """Every record summed, through /admin/usage."""
    r = requests.get(url + "/admin/usage", params={"group_by": ""}, headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return data[0] if data else {"requests": 0}  # type: ignore[no-any-return]
