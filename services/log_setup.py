"""Configure loguru sinks for this process: stderr always, a per-worker file when asked.

Two formats: `text` for people (`[time] [LEVEL] message`) and `json` for log shippers, one
object per line with the time, level, message, process id and any structured fields bound to
the record (the access line binds request id, client, key name, model, status, ...).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from loguru import logger

from config import Settings

TEXT_FORMAT = "[{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z] [{level}] {message}"


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


def configure_logging(settings: Settings) -> None:
    """Replace loguru's default sink with Relay's format and level."""
    logger.remove()
    fmt: Any = _json_format if settings.log_format == "json" else TEXT_FORMAT
    options = {"level": settings.log_level, "format": fmt, "backtrace": False, "diagnose": False}
    logger.add(sys.stderr, **options)
    if settings.log_dir:
        # One file per worker process: several processes rotating one file lose records
        # (DESIGN §8.9); rotation is left to logrotate.
        os.makedirs(settings.log_dir, exist_ok=True)
        logger.add(os.path.join(settings.log_dir, f"relay.{os.getpid()}.log"), **options)
