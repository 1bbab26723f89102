#!/usr/bin/env bash
# Debian's libfaketime, so the workload identity test can move the service's wall clock past azure-identity's
# ten-minute token-file cache without waiting ten minutes. Idempotent.
set -euo pipefail
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends libfaketime >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends libfaketime >/dev/null
fi
echo "faketime.sh: installed $(ls /usr/lib/*/faketime/libfaketime.so.1)"
