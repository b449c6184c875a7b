"""Configure loguru sinks for this process: stderr always, a per-worker file when asked."""

from __future__ import annotations

import os
import sys

from loguru import logger

from config import Settings

FORMAT = "[{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z] [{level}] {message}"


def configure_logging(settings: Settings) -> None:
    """Replace loguru's default sink with Relay's format and level."""
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level, format=FORMAT, backtrace=False, diagnose=False)
    if settings.log_dir:
        # One file per worker process: several processes rotating one file lose records
        # (DESIGN §8.9); rotation is left to logrotate.
        os.makedirs(settings.log_dir, exist_ok=True)
        path = os.path.join(settings.log_dir, f"relay.{os.getpid()}.log")
        logger.add(path, level=settings.log_level, format=FORMAT, backtrace=False, diagnose=False)
