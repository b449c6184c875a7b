"""Container health check: exit 0 when this machine's Relay answers GET /health, 1 otherwise.

Reads the port from Relay's own settings (PORT, .env, RELAY_CONFIG), so it follows the config.
Used by the Dockerfile's HEALTHCHECK; the image has no curl.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import config  # noqa: E402 - after the path is set


def main() -> int:
    try:
        port = config.load().port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as e:  # any failure is "unhealthy"; say why for `docker inspect`
        print(f"relay unhealthy: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
