"""Value parsers for the configuration: each names the setting in its one-line error.

Shared by config.py, settings/backends.py and settings/access.py. Standard library only.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = {
    "error": "ERROR",
    "warn": "WARNING",
    "warning": "WARNING",
    "info": "INFO",
    "debug": "DEBUG",
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what was wrong."""


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"RELAY_CONFIG cannot read {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"RELAY_CONFIG {path!r} is not valid TOML: {e}") from None


def as_table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"RELAY_CONFIG [{name}] must be a table")
    return value


def as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value.strip()


def as_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    try:
        if isinstance(value, bool | float):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{name} must be {bounds}, got {number}")
    return number


def as_float(name: str, value: Any, *, lo: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if lo is not None and not number >= lo:
        raise ConfigError(f"{name} must be at least {lo}, got {number}")
    return number


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def as_log_level(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of error, warn, info, debug; got {value!r}")
    return LOG_LEVELS[text]


def as_keys(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    keys = tuple(str(k).strip() for k in items if str(k).strip())
    for key in keys:
        if len(key) < 8 or any(c.isspace() for c in key):
            raise ConfigError(f"{name} has a key shorter than 8 characters or with spaces in it")
    return keys


def as_networks(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or networks, got {item!r}") from None
    return tuple(out)


def as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def as_opt_str(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def as_origins(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    origins = tuple(str(o).strip().rstrip("/") for o in items if str(o).strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.hostname or parts.path
        ):
            raise ConfigError(
                f"{name} must list origins like https://app.example.com (scheme, host and "
                f"optional port, no path) or *, got {origin!r}"
            )
    return origins


def as_dify_url(name: str, value: Any) -> str:
    """Accept Dify's API URL with or without the /v1 suffix; return it with."""
    url = as_url(name, value)
    return url if url.endswith("/v1") else url + "/v1"


def as_optional_url(name: str, value: Any) -> str | None:
    return as_url(name, value) if value and str(value).strip() else None


def as_url(name: str, value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} must be an http(s) URL like http://localhost:11434, got {value!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name} has a bad port: {value!r}") from None
    return text
