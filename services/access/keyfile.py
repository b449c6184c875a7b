"""Edit the `[keys.NAME]` tables of the TOML config file for the key tool, keeping the rest of
the file (comments included) as it was. Only a secret's SHA-256 digest is ever written.

Every edit is checked by parsing the result before it atomically replaces the file, so a
running gateway (which re-reads the file when it changes) never sees a half-written one.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from config import ConfigError
from services.access.keys import digest
from settings.access import KEY_NAME, LIMIT_FIELDS, KeySettings, read_keys
from settings.budgets import BUDGET_FIELDS


def new_secret() -> str:
    """Make a new key: 'sk-relay-' and 48 random hex digits."""
    return "sk-relay-" + secrets.token_hex(24)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o600
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".relay-keys-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _sync_directory(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sync_directory(directory: str) -> None:
    # The rename itself lasts only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_key(
    path: str,
    name: str,
    *,
    models: tuple[str, ...] = (),
    expires: datetime | None = None,
    limits: Mapping[str, int] | None = None,
    cache_group: str | None = None,
    budgets: Mapping[str, int] | None = None,
) -> str:
    """Add a key to the file and return its secret, which is stored nowhere."""
    if not KEY_NAME.match(name):
        raise ConfigError("a key name may use letters, digits, '-' and '_' only (1-64)")
    text = _read(path)
    if name in _parse(text, path).get("keys", {}):
        raise ConfigError(f"key '{name}' already exists in {path}")
    secret = new_secret()
    lines = [f"[keys.{name}]", f'hash = "sha256:{digest(secret)}"']
    if models:
        lines.append("models = [" + ", ".join(_quote(m) for m in models) + "]")
    if expires is not None:
        lines.append(f"expires = {expires.isoformat().replace('+00:00', 'Z')}")
    if limits:
        unknown = set(limits) - set(LIMIT_FIELDS)
        if unknown:
            raise ConfigError(f"unknown limit {sorted(unknown)[0]!r}")
        lines.append("limits = { " + ", ".join(f"{k} = {int(v)}" for k, v in limits.items()) + " }")
    if cache_group:
        lines.append(f"cache_group = {_quote(cache_group)}")
    for field, value in (budgets or {}).items():
        if field not in BUDGET_FIELDS:
            raise ConfigError(f"unknown budget {field!r}")
        lines.append(f"budget_{field} = {int(value)}")
    lines.append("enabled = true")
    block = "\n".join(lines) + "\n"
    new_text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    _parse(new_text, path)
    _write(path, new_text)
    return secret


def set_enabled(path: str, name: str, enabled: bool) -> None:
    """Turn a key on or off in place (revoking keeps the entry, so its name stays taken)."""
    text = _read(path)
    if name not in _parse(text, path).get("keys", {}):
        raise ConfigError(f"no key '{name}' in {path}")
    lines = text.splitlines(keepends=True)
    header = re.compile(rf"^\s*\[\s*keys\s*\.\s*(\"{re.escape(name)}\"|{re.escape(name)})\s*\]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        raise ConfigError(f"key '{name}' is not a [keys.{name}] table; edit {path} by hand")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    value = f"enabled = {'true' if enabled else 'false'}\n"
    found = [i for i in range(start + 1, end) if re.match(r"^\s*enabled\s*=", lines[i])]
    if found:
        lines[found[0]] = value
    else:
        lines.insert(start + 1, value)
    new_text = "".join(lines)
    if _parse(new_text, path)["keys"][name].get("enabled") is not enabled:
        raise ConfigError(f"could not change key '{name}'; edit {path} by hand")
    _write(path, new_text)


def list_keys(path: str) -> tuple[KeySettings, ...]:
    """Read the file's keys (secrets are never in it, only digests or variable names)."""
    return read_keys(path) if os.path.exists(path) else ()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
