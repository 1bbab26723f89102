#!/usr/bin/env bash
# The API clients the e2e tests drive, unchanged: the four Azure Container Apps sessions clients against our
# /sessions API (tests/e2e/test_aca_clients.py) and the OpenAI Agents SDK against /v1/responses
# (tests/e2e/test_responses_clients.py), each in its own virtual environment under $LCI_TOOLS/aca-clients/NAME
# (their dependency trees conflict with the service's pins and with each other), from the pinned list
# tests/e2e/clients/NAME.txt. A client whose
# list did not change since its last install is skipped, so a second run takes well under a second.
source "$(dirname "$0")/../lib.sh"
DEST="$LCI_TOOLS/aca-clients"
mkdir -p "$DEST"
PY="$(pick_python)"
for pins in "$ROOT"/tests/e2e/clients/*.txt; do
  name="$(basename "$pins" .txt)"
  venv="$DEST/$name"
  want="$(sha256sum "$pins" | cut -c1-16)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$want" ]; then
    continue
  fi
  echo "aca-clients.sh: installing $name"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$pins"
  "$venv/bin/python" -m pip check >/dev/null
  echo "$want" > "$venv/.installed"
done
