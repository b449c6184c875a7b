#!/usr/bin/env bash
# Development mode: Flask's debug server with the auto-reloader, on loopback only.
# Same settings as serve.sh (environment, .env, RELAY_CONFIG); extra arguments go to `flask run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements.txt
port=$(.venv/bin/python -c 'import config; print(config.load().port)')
exec .venv/bin/flask --app app:create_app run --debug --reload --host 127.0.0.1 --port "$port" "$@"
