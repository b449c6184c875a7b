"""Helpers for the usage ledger's tests: a gateway writing to its own SQLite file, and reading
the ledger back over HTTP (/admin/usage, /v1/usage), with the CLI and straight from the file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
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


def ledger_env(db: Path, ollama_url: str, **extra: str) -> dict[str, str]:
    return {
        "OLLAMA_BASE_URL": ollama_url,
        "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "RELAY_DATABASE_URL": f"sqlite:///{db}",
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


def run_cli(db: Path, *args: str, usage: str = "on") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RELAY_ENV_FILE": "",
        "RELAY_DATABASE_URL": f"sqlite:///{db}",
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
