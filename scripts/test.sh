#!/usr/bin/env bash
# Run every check: formatting, lint, types, and the whole test suite (real gunicorn, fakes, and
# llama.cpp's real server for tests/real).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
# llama-cpp-python (the real upstream of tests/real) compiles llama.cpp once per machine.
ensure_command cmake cmake
ensure_command c++ g++
ensure_venv requirements-dev.txt requirements-build-once.txt
# The Redis tests start real redis-server processes.
ensure_command redis-server redis-server
# The usage ledger's PostgreSQL tests start a private cluster with Debian's server binaries
# (under /usr/lib/postgresql/<version>/bin, not on PATH: hence the newest one's full path).
pg_initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
ensure_command "${pg_initdb:-initdb}" postgresql
# The official openai Node SDK is the second client of the end-to-end tests.
ensure_command node nodejs
ensure_command npm npm
# Deployment tests run the shipped nginx site and check the systemd unit.
ensure_command nginx nginx
ensure_command openssl openssl
ensure_command systemd-analyze systemd
# The service page is checked in a real headless browser.
ensure_command chromium chromium
if [ ! -d tests/node/node_modules/openai ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  (cd tests/node && npm ci --silent --no-audit --no-fund)
fi
# The real Claude Code CLI (a native binary in an npm package) drives Relay's Anthropic face.
if [ ! -x tests/claude_code/node_modules/.bin/claude ] || [ tests/claude_code/package-lock.json -nt tests/claude_code/node_modules ]; then
  (cd tests/claude_code && npm ci --silent --no-audit --no-fund)
fi
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
