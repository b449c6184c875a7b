# Shared by serve.sh and test.sh: make sure .venv exists and holds the locked requirements.
# ensure_venv LOCK [BUILD_ONCE...]: LOCK is a compiled lock (requirements.txt or
# requirements-dev.txt, every package pinned with hashes) and installs hash-checked; each
# BUILD_ONCE file then adds packages built here from source, which no PyPI hash can match, without
# their dependencies (the lock already pins those).
# Re-installs only when a requirements file changed since the last install.
ensure_venv() {
  local requirements="$1"
  shift
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
  # Every caller of requirements-dev.txt passes requirements-build-once.txt with it, so the stamp
  # is named after the lock alone.
  local stamp=".venv/.installed-$(basename "$requirements")"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  # The test lock includes the app's (-r requirements.in, the same pins): installed, it covers both.
  local dev_stamp=".venv/.installed-requirements-dev.txt"
  if [ -f "$dev_stamp" ] && [ "$(cat "$dev_stamp")" = "$want" ]; then
    return 0
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
      -r "$requirements"
    local extra wheels
    for extra in "$@"; do
      wheels=$(build_once_wheels "$extra")
      PIP_FIND_LINKS="${PIP_FIND_LINKS:+$PIP_FIND_LINKS }$wheels" \
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r "$extra"
    done
    echo "$want" > "$stamp"
  fi
}

# Requirements marked `# build-once` have no wheel on PyPI and compile from source (minutes):
# build each once into a wheel directory outside the checkout, which every clone and fresh venv
# on this machine then installs from. Prints that directory.
build_once_wheels() {
  local requirements="$1"
  local dir="${RELAY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relay-wheels}"
  mkdir -p "$dir"
  local spec name version
  for spec in $(sed -n 's/^\([A-Za-z0-9_.-]*\)\(\[[A-Za-z0-9_,]*\]\)\{0,1\}==\([^ ]*\).*# build-once.*$/\1==\3/p' "$requirements"); do
    name=${spec%%==*}
    version=${spec##*==}
    if ! ls "$dir/${name//-/_}-$version-"*.whl >/dev/null 2>&1; then
      echo "Building $spec once into $dir (it compiles from source; minutes)" >&2
      CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps -w "$dir" "$spec" >&2
    fi
  done
  echo "$dir"
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
