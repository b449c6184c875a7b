"""Configure loguru sinks for this process: stderr always, a per-worker file when asked.

Two formats: `text` for people (`[time] [LEVEL] message`) and `json` for log shippers, one
object per line with the time, level, message, process id and any structured fields bound to
the record (the access line binds request id, client, key name, model, status, ...).

Log lines carry what callers sent (paths, model names, upstream errors). In the text format
every control character of a message is escaped, so a caller cannot end a line and forge the
next one; JSON escapes them by itself. Long caller-controlled fields are cut (`cut`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from loguru import logger

from config import Settings

TEXT_FORMAT = "[{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z] [{level}] {extra[_text]}\n{exception}"
MAX_FIELD = 200  # characters of one caller-controlled field kept in a log line

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: everything some
# reader of a log file may take for the end of a line.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Write control characters as visible escapes: a newline becomes the two characters \\n."""
    return _CONTROLS.sub(lambda m: _NAMED.get(m[0]) or f"\\u{ord(m[0]):04x}", text)


_SPACES = re.compile(r"\s")  # any Unicode whitespace: what a reader may split fields at


def one_field(text: str) -> str:
    """Write a caller's value so that it stays one field of a text line: whitespace escaped.

    A model name or a decoded path holding " key=admin status=200" would otherwise add fields
    that a grep or a key=value parser takes for the line's own.
    """
    return _SPACES.sub(lambda m: f"\\u{ord(m[0]):04x}", escape_controls(text))


def cut(text: str, limit: int = MAX_FIELD) -> str:
    """Keep the first `limit` characters of a caller-controlled field and say how much went."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[cut {len(text) - limit} chars]"


def _text_format(record: Any) -> str:
    # loguru treats the returned string as a format template: stash the escaped message.
    record["extra"]["_text"] = escape_controls(record["message"])
    return TEXT_FORMAT


def _json_format(record: Any) -> str:
    line = {
        "time": record["time"].astimezone().isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "pid": record["process"].id,
        **record["extra"].get("access", {}),
        **{k: v for k, v in record["extra"].items() if k != "access" and not k.startswith("_")},
    }
    if record["exception"] is not None:
        line["exception"] = repr(record["exception"].value)
    # loguru treats the returned string as a format template: stash the JSON in extra.
    record["extra"]["_json"] = json.dumps(line, default=str, ensure_ascii=False)
    return "{extra[_json]}\n{exception}"


_min_level = 0  # the configured level's number: nothing below it is written anywhere


def enabled(level: str) -> bool:
    """Whether a record at this level would be written: callers skip building lines that
    would be thrown away (the access line at LOG_LEVEL=warning, say)."""
    return bool(logger.level(level).no >= _min_level)


def configure_logging(settings: Settings) -> None:
    """Replace loguru's default sink with Relay's format and level."""
    global _min_level
    _min_level = logger.level(settings.log_level).no
    logger.remove()
    fmt: Any = _json_format if settings.log_format == "json" else _text_format
    options = {"level": settings.log_level, "format": fmt, "backtrace": False, "diagnose": False}
    logger.add(sys.stderr, **options)
    if settings.log_dir:
        # One file per worker process: several processes rotating one file lose records
        # (docs/design.md §3.4); rotation is left to logrotate.
        os.makedirs(settings.log_dir, exist_ok=True)
        logger.add(os.path.join(settings.log_dir, f"relay.{os.getpid()}.log"), **options)
