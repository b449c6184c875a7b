#!/usr/bin/env bash
# Recompile the locks after editing requirements.in or requirements-dev.in: every indirect
# dependency pinned, with hashes, so a fresh machine installs exactly what the tests ran with.
# pip-tools runs from its own throwaway venv (pinned here), never from the project's.
# Pass --upgrade (or --upgrade-package NAME) to move indirect pins; without it they stay put.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS_VERSION=7.6.2
tools="${RELAY_LOCK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/relay-pip-tools-$PIP_TOOLS_VERSION}"
if [ ! -x "$tools/bin/pip-compile" ]; then
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
fi
# The build-once wheel (when built) gives pip-compile llama-cpp-python's metadata without compiling.
wheels="${RELAY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relay-wheels}"
compile() {
  PIP_FIND_LINKS="${PIP_FIND_LINKS:+$PIP_FIND_LINKS }$wheels" \
    "$tools/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-index-url \
    --no-emit-find-links --unsafe-package llama-cpp-python "$@"
}
# pip-compile warns that llama-cpp-python is left unpinned in requirements-dev.txt: intended, it is
# installed from requirements-build-once.txt after the lock.
compile "${@}" --output-file requirements.txt requirements.in
compile "${@}" --output-file requirements-dev.txt requirements-dev.in
