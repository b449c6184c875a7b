#!/usr/bin/env bash
# One command for the comparison benchmark: installs what it needs (wrk, matplotlib, and
# LiteLLM's proxy in its own environment under .bench/), then runs bench/compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_command cmake cmake
ensure_command c++ g++
ensure_venv requirements-dev.txt requirements-build-once.txt
ensure_command wrk wrk
.venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
if [ ! -x .bench/litellm/bin/litellm ]; then
  python3 -m venv .bench/litellm
  .bench/litellm/bin/python -m pip install -q --disable-pip-version-check 'litellm[proxy]==1.106.2'
fi
exec .venv/bin/python -m bench.compare "$@"
