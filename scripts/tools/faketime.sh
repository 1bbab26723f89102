#!/usr/bin/env bash
# Debian's libfaketime, so the workload identity test can move the service's wall clock past azure-identity's
# ten-minute token-file cache without waiting ten minutes. Idempotent.
set -euo pipefail
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 && exit 0
source "$(dirname "$0")/../lib.sh"
apt_install libfaketime
echo "faketime.sh: installed $(ls /usr/lib/*/faketime/libfaketime.so.1)"
