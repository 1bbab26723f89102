#!/usr/bin/env bash
# Debian's curl (built with nghttp2), so the hostile-client tests send what `curl --http2` sends to an http:// URL:
# the request with `Upgrade: h2c`, its body included. Idempotent.
set -euo pipefail
curl --version 2>/dev/null | grep -q HTTP2 && exit 0
source "$(dirname "$0")/../lib.sh"
apt_install curl
echo "curl.sh: installed $(curl --version | head -1)"
