#!/usr/bin/env bash
# Debian's Chromium for the DevUI browser test (Playwright drives the system browser; no browser download).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
source "$(dirname "$0")/../lib.sh"
apt_install chromium fonts-dejavu-core
echo "browser.sh: installed $(/usr/bin/chromium --version)"
