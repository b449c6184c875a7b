"""The environment Relay reads its settings from: the process environment over a `.env` file.

The only module that reads the process environment (config.py builds every setting from what this
returns).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dotenv import dotenv_values


def read_environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The `.env` file (RELAY_ENV_FILE, default `.env`) overlaid by the process environment."""
    process_env = os.environ if environ is None else environ
    dotenv_path = process_env.get("RELAY_ENV_FILE", ".env")
    env: dict[str, str] = {}
    if dotenv_path and os.path.isfile(dotenv_path):
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(process_env)
    return env
