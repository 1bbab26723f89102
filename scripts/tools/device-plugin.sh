#!/usr/bin/env bash
# What tests/deploy/test_device_plugin.py runs, into $LCI_TOOLS/bin:
#   - the upstream Hyperlight device plugin, hyperlight-dev/hyperlight-on-kubernetes at a pinned commit (its Go
#     module is github.com/hyperlight-dev/hyperlight-device-plugin, in the repository's device-plugin/ folder),
#     built from the Go module proxy when the proxy serves it. It does not today: the proxy answers "403 Forbidden,
#     This module version is not available" for every path and version of it (and the module's path does not
#     match its repository, so `go install` could not fetch it from source either). The refusal is recorded in
#     $LCI_TOOLS/device-plugin/upstream.json, which the test reads and reports;
#   - otherwise the project's TEST DOUBLE of that plugin (tests/deploy/deviceplugin/cmd/hyperlight-device-plugin-double,
#     the same contract: paths, CDI spec, registration), plus a fake kubelet (the device-plugin API v1beta1
#     Registration service) and containerd's RuntimeDefault seccomp profile (seccomp.json);
#   - runc (Debian's package), which runs the plugin under the DaemonSet's security context.
# A build whose stamp (sources + Go version) matches is kept, so a cached run takes about a second.
source "$(dirname "$0")/../lib.sh"

UPSTREAM_MODULE=github.com/hyperlight-dev/hyperlight-device-plugin
# hyperlight-dev/hyperlight-on-kubernetes commit 51d7dab575e0 (2026-03-26), the last change to device-plugin/;
# its image is ghcr.io/hyperlight-dev/hyperlight-device-plugin:51d7dab (see infrastructure/hyperlight-device-plugin).
UPSTREAM_VERSION=v0.0.0-20260326192642-51d7dab575e0

BIN="$LCI_TOOLS/bin" STAMPS="$LCI_TOOLS/stamps" OUT="$LCI_TOOLS/device-plugin"
mkdir -p "$BIN" "$STAMPS" "$OUT"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
SRC="$ROOT/tests/deploy/deviceplugin"

if ! command -v runc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "device-plugin.sh: installing runc"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null \
      || echo "device-plugin.sh: could not install runc: tests/deploy/test_device_plugin.py will skip"
  else
    echo "device-plugin.sh: runc missing and not root: install it with apt-get"
  fi
fi

# The upstream module: ask the proxy (a refusal costs about a second) and build it when served.
upstream_stamp="$UPSTREAM_MODULE@$UPSTREAM_VERSION $(go env GOVERSION)"
if [ -x "$BIN/hyperlight-device-plugin" ] && [ "$(cat "$STAMPS/hyperlight-device-plugin" 2>/dev/null)" = "$upstream_stamp" ]; then
  echo "cached: hyperlight-device-plugin ($UPSTREAM_MODULE@$UPSTREAM_VERSION)"
else
  answer="$(go mod download -json "$UPSTREAM_MODULE@$UPSTREAM_VERSION" 2>/dev/null || true)"
  # The proxy's address (GOPROXY) is left out of what is recorded.
  error="$(jq -r '.Error // empty' <<<"$answer" 2>/dev/null | sed 's#https\?://[^/ ]*#$GOPROXY#g' \
           || echo "no answer from go mod download")"
  if [ -z "$error" ] && [ -n "$answer" ]; then
    wrapper="$(mktemp -d)"
    (
      cd "$wrapper" && go mod init lci.local/upstream-wrapper >/dev/null 2>&1
      go get "$UPSTREAM_MODULE@$UPSTREAM_VERSION" >/dev/null 2>&1
      nice go build -trimpath -ldflags "-s -w" -o "$BIN/hyperlight-device-plugin" "$UPSTREAM_MODULE"
    ) && echo "$upstream_stamp" >"$STAMPS/hyperlight-device-plugin" \
      && jq -n --arg m "$UPSTREAM_MODULE" --arg v "$UPSTREAM_VERSION" \
           '{module: $m, version: $v, served: true, binary: "hyperlight-device-plugin"}' >"$OUT/upstream.json" \
      && echo "built hyperlight-device-plugin from $UPSTREAM_MODULE@$UPSTREAM_VERSION"
    rm -rf "$wrapper"
  else
    jq -n --arg m "$UPSTREAM_MODULE" --arg v "$UPSTREAM_VERSION" --arg e "$error" \
      '{module: $m, version: $v, served: false, error: $e, binary: "hyperlight-device-plugin-double"}' >"$OUT/upstream.json"
    echo "device-plugin.sh: the module proxy refuses $UPSTREAM_MODULE@$UPSTREAM_VERSION: $error"
    echo "device-plugin.sh: the test runs the project's test double of it instead"
  fi
fi

# The double, the fake kubelet and the seccomp profile, from the project's own sources.
stamp="$(cat "$SRC/go.mod" "$SRC/go.sum" $(find "$SRC/cmd" -name '*.go' | sort) | sha256sum | cut -c1-16) $(go env GOVERSION)"
if [ -x "$BIN/hyperlight-device-plugin-double" ] && [ -x "$BIN/fake-kubelet" ] && [ -s "$OUT/seccomp.json" ] \
   && [ "$(cat "$STAMPS/device-plugin-double" 2>/dev/null)" = "$stamp" ]; then
  echo "cached: hyperlight-device-plugin-double, fake-kubelet, seccomp.json"
else
  started=$SECONDS
  (cd "$SRC" && nice go build -trimpath -ldflags "-s -w" -o "$OUT/" ./cmd/...)
  mv "$OUT/hyperlight-device-plugin-double" "$OUT/fake-kubelet" "$BIN/"
  "$OUT/seccomp-default" >"$OUT/seccomp.json" && rm -f "$OUT/seccomp-default"
  echo "$stamp" >"$STAMPS/device-plugin-double"
  echo "built hyperlight-device-plugin-double, fake-kubelet, seccomp.json in $((SECONDS - started))s"
fi
