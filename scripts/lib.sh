# Shared by scripts/run and scripts/test: paths and the project's virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools built or downloaded for the tests live outside the checkout, so fresh clones (CI) reuse them.
export LCI_TOOLS="${LCI_TOOLS:-$HOME/.cache/local-code-interpreter}"
export PATH="$LCI_TOOLS/bin:$ROOT/.venv/bin:$PATH"

# ensure_venv REQUIREMENTS: create .venv and install the pins plus the package, only when they changed.
ensure_venv() {
  local req="$ROOT/$1" stamp="$ROOT/.venv/.installed"
  local want; want="$(cat "$ROOT/requirements.txt" "$req" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$ROOT/.venv"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
  fi
}
