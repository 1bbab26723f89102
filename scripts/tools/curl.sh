#!/usr/bin/env bash
# Debian's curl (built with nghttp2), so the hostile-client tests send what `curl --http2` sends to an http:// URL:
# the request with `Upgrade: h2c`, its body included. Idempotent.
set -euo pipefail
curl --version 2>/dev/null | grep -q HTTP2 && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends curl >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends curl >/dev/null
fi
echo "curl.sh: installed $(curl --version | head -1)"
