#!/usr/bin/env bash
# Start Relay under gunicorn with gevent workers, creating its environment on the first run.
# Settings come from the environment or a .env file beside this project (see docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements.txt
exec .venv/bin/gunicorn wsgi:app "$@"
