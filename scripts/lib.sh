# Shared by scripts/run and scripts/test: paths and the project's virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools built or downloaded for the tests live outside the checkout, so fresh clones (CI) reuse them.
export LCI_TOOLS="${LCI_TOOLS:-$HOME/.cache/local-code-interpreter}"
export PATH="$LCI_TOOLS/bin:$ROOT/.venv/bin:$PATH"

# As root, the sandbox runs code as `nobody`, which must be able to read the interpreter's standard library:
# prefer the system Python there (a pyenv under /root is not readable). $PYTHON overrides.
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ "$(id -u)" = 0 ] && /usr/bin/python3 -c 'import sys, venv; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    echo /usr/bin/python3; return
  fi
  echo python3
}

# apt_install PACKAGE...: Debian packages, with sudo when not root; the package lists are refreshed only when the
# install fails without (for scripts/tools/*.sh).
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null
  fi
}

# ensure_venv REQUIREMENTS: create .venv and install the pins plus the package, only when they changed.
ensure_venv() {
  local req="$ROOT/$1" stamp="$ROOT/.venv/.installed"
  local want; want="$(cat "$ROOT/requirements.txt" "$req" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    "$(pick_python)" -m venv "$ROOT/.venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
}
