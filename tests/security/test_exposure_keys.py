"""Finding 3: a gateway that has keys never becomes open when its key file changes.

Real gunicorn; the key file is rewritten under it the ways an operator or a crash would.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tomllib
from pathlib import Path

import pytest
import requests

from services.access import keyfile
from tests.conftest import wait_until, write_config

ALICE = "sk-exposure-alice-0123456789"
WRONG = "sk-exposure-wrong-0123456789"
DIGEST = hashlib.sha256(ALICE.encode()).hexdigest()
ALICE_TABLE = f'[keys.alice]\nhash = "sha256:{DIGEST}"\n'


def status(gw, secret: str | None) -> int:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return requests.get(gw.url + "/v1/models", headers=headers, timeout=10).status_code


def after_reload(gw, marker: str, before: int) -> None:
    """Keep sending requests (the file is looked at on requests) until the log shows `marker`
    once more than `before` times."""
    wait_until(lambda: status(gw, ALICE) and gw.logs().count(marker) > before, timeout=15)


@pytest.fixture
def keyed(start_gateway, fake_ollama, ollama, tmp_path):
    path = Path(write_config(tmp_path / "relay.toml", ALICE_TABLE))
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_CONFIG": str(path),
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "0",  # this test sends many 401s on purpose
        }
    )
    assert status(gw, ALICE) == 200 and status(gw, None) == 401
    return gw, path


def restore(gw, path: Path) -> None:
    before = gw.logs().count("keys reloaded")
    path.write_text(ALICE_TABLE + "# restored\n" * (before + 1))  # a new size: surely seen
    after_reload(gw, "keys reloaded", before)


BREAKAGES = {
    "truncated to empty": lambda p: p.write_text(""),
    "last key table deleted": lambda p: p.write_text('[server]\nlog_level = "info"\n'),
    "empty keys table": lambda p: p.write_text("[keys]\n"),
    "invalid TOML": lambda p: p.write_text("[keys.alice\n"),
    "bytes that are not UTF-8": lambda p: p.write_bytes(b"\xff\xfe[keys]\n"),
    "cut mid-write": lambda p: p.write_text(ALICE_TABLE[:9]),
    "file deleted": lambda p: p.unlink(),
}


def test_an_empty_missing_or_broken_key_file_keeps_the_keys(keyed):
    gw, path = keyed
    for what, breakage in BREAKAGES.items():
        before = gw.logs().count("keys not reloaded")
        breakage(path)
        after_reload(gw, "keys not reloaded", before)
        assert status(gw, None) == 401, what
        assert status(gw, WRONG) == 401, what
        assert status(gw, "") == 401, what
        assert status(gw, ALICE) == 200, what  # the keys in force stay in force
        restore(gw, path)
    assert ALICE not in gw.logs()


def test_revoking_the_only_key_shuts_everyone_out(keyed):
    gw, path = keyed
    before = gw.logs().count("keys reloaded")
    path.write_text(ALICE_TABLE + "enabled = false\n")
    after_reload(gw, "keys reloaded", before)
    for secret in (None, WRONG, ALICE):
        assert status(gw, secret) == 401, secret
    reply = requests.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {ALICE}"})
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert "revoked" in reply.json()["error"]["message"]


def test_a_file_rewritten_in_place_is_read_only_once_it_settles(keyed):
    """An editor rewriting the file in place can leave it cut for a moment; a cut table that
    lost its `enabled = false` must not be loaded (it would admit a revoked key)."""
    gw, path = keyed
    revoked = ALICE_TABLE + "enabled = false\n"
    before = gw.logs().count("keys reloaded")
    path.write_text(revoked)
    after_reload(gw, "keys reloaded", before)
    assert status(gw, ALICE) == 401
    time.sleep(1.2)  # the next request looks at the file again at once
    path.write_text(ALICE_TABLE)  # the cut moment: the table without its last line
    seen = []
    end = time.monotonic() + 0.2  # shorter than the half second a change must settle
    while time.monotonic() < end:
        seen.append(status(gw, ALICE))
    path.write_text(revoked + "# written in full\n")
    seen.extend(status(gw, ALICE) for _ in range(5))
    assert set(seen) == {401}, seen


def test_an_open_gateway_closes_when_keys_appear_and_never_reopens(
    start_gateway, fake_ollama, ollama, tmp_path
):
    path = Path(write_config(tmp_path / "relay.toml", '[server]\nlog_level = "info"\n'))
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_CONFIG": str(path),
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "0",
        }
    )
    assert status(gw, None) == 200  # started open, on loopback
    path.write_text(ALICE_TABLE)
    wait_until(lambda: status(gw, None) == 401, timeout=15)
    assert status(gw, ALICE) == 200 and status(gw, WRONG) == 401

    for breakage in (lambda p: p.write_text(""), lambda p: p.unlink()):
        before = gw.logs().count("keys not reloaded")
        breakage(path)
        after_reload(gw, "keys not reloaded", before)
        assert status(gw, None) == 401 and status(gw, WRONG) == 401
        assert status(gw, ALICE) == 200
        restore(gw, path)


def test_the_key_tool_replaces_the_file_atomically(tmp_path):
    """Readers see the old file or the new one, never a part: a new inode, whole each time."""
    path = tmp_path / "relay.toml"
    path.write_text(ALICE_TABLE)
    os.chmod(path, 0o640)
    seen: list[str] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    replaced = []
    try:
        for n in range(25):
            before = path.stat().st_ino
            keyfile.create_key(str(path), f"key{n}", models=("llama*",))
            # The new file was made while the old one existed: another inode, put in place by
            # a rename (an inode may be reused later, once the old file is gone).
            replaced.append(path.stat().st_ino != before)
    finally:
        stop.set()
        reader.join()
    assert all(replaced)
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert [p.name for p in tmp_path.iterdir()] == ["relay.toml"]  # no temporary file left
    assert seen
    for text in seen:
        keys = tomllib.loads(text)["keys"]  # whole TOML every time, never cut
        assert "alice" in keys
