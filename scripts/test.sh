#!/usr/bin/env bash
# Run every check: formatting, lint, types, and the whole test suite (real gunicorn + fakes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements-dev.txt
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
