#!/usr/bin/env bash
# Run every check: formatting, lint, types, and the whole test suite (real gunicorn + fakes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements-dev.txt
# The Redis tests start real redis-server processes (Debian's package).
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "the tests need redis-server: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
