# Shared by serve.sh and test.sh: make sure .venv exists and holds the pinned requirements.
# Re-installs only when the requirements file changed since the last install.
ensure_venv() {
  local requirements="$1"
  if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
      # Debian ships venv separately; install it when we are allowed to.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      else
        echo "Relay needs Python 3.11+ with venv: sudo apt-get install python3-venv" >&2
        exit 1
      fi
      rm -rf .venv
      python3 -m venv .venv
    fi
  fi
  local stamp=".venv/.installed-$(basename "$requirements")"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

# Install Debian packages when a command is missing (test dependencies such as node).
ensure_command() {
  local command="$1"; shift
  command -v "$command" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "Relay's tests need $command: sudo apt-get install $*" >&2
    exit 1
  fi
}
