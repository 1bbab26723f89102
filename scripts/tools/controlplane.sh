#!/usr/bin/env bash
# Builds the real control plane that tests/e2e runs on loopback: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, and the Flux source- and kustomize-controller, from their Go modules at pinned versions,
# into $LCI_TOOLS/bin; the Flux CRDs into $LCI_TOOLS/flux-crds, kwok's stages into $LCI_TOOLS/kwok-stages.yaml. A binary whose version stamp matches is kept,
# so a cached run takes seconds. Log of a build: $LCI_TOOLS/logs/NAME.log.
source "$(dirname "$0")/../lib.sh"

K8S_VERSION=v1.37.2
K8S_STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # k8s.io/api etc. are published as v0.MINOR.PATCH
ETCD_VERSION=v3.6.16
FLUX_SOURCE_VERSION=v1.9.0                     # v1.9.2+ need a fluxcd/pkg/artifact the module proxy refuses; v1.10 needs Go 1.27
FLUX_KUSTOMIZE_VERSION=v1.9.6
KWOK_VERSION=v0.8.0

BIN="$LCI_TOOLS/bin"
STAMPS="$LCI_TOOLS/stamps"
LOGS="$LCI_TOOLS/logs"
mkdir -p "$BIN" "$STAMPS" "$LOGS"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOMAXPROCS="${GOMAXPROCS:-2}"
GO_VERSION="$(go env GOVERSION)"

# fresh NAME STAMP: true when $BIN/NAME exists and was built for STAMP.
fresh() { [ -x "$BIN/$1" ] && [ "$(cat "$STAMPS/$1" 2>/dev/null)" = "$2" ]; }

# replacements MODULE@VERSION: the `-replace` flags a wrapper module needs so that MODULE builds outside its own
# repository: replacements pointing into the repository (./staging/..., ./api) become the published module at the
# version MODULE requires (k8s.io staging modules: $K8S_STAGING_VERSION); the others are kept as they are.
replacements() {
  local gomod; gomod="$(go mod download -json "$1" | jq -r .GoMod)"
  go mod edit -json "$gomod" | jq -r --arg staging "$K8S_STAGING_VERSION" '
    (.Require // [] | map({(.Path): .Version}) | add) as $required
    | .Replace // [] | .[]
    | if (.New.Path | startswith(".")) then
        "-replace=\(.Old.Path)=\(.Old.Path)@\(
          if ($required[.Old.Path] // "v0.0.0") == "v0.0.0" then $staging else $required[.Old.Path] end)"
      elif .New.Version then "-replace=\(.Old.Path)=\(.New.Path)@\(.New.Version)"
      else empty end'
}

# build MODULE VERSION NAME=PACKAGE...: build each PACKAGE of MODULE@VERSION into $BIN/NAME through a throwaway
# wrapper module (`go install` refuses modules with replace directives). LDFLAGS is passed to the linker.
build() {
  local module="$1" version="$2"; shift 2
  local stamp="$module@$version $GO_VERSION" todo=() pair
  for pair in "$@"; do fresh "${pair%%=*}" "$stamp" || todo+=("$pair"); done
  [ "${#todo[@]}" -gt 0 ] || { echo "cached: ${*%%=*} ($module@$version)"; return; }
  local wrapper; wrapper="$(mktemp -d)"
  (
    cd "$wrapper"
    go mod init lci.local/wrapper >/dev/null 2>&1
    # shellcheck disable=SC2046  # one flag a line
    go mod edit -require="$module@$version" $(replacements "$module@$version")
    for pair in "${todo[@]}"; do
      local name="${pair%%=*}" package="${pair#*=}" started=$SECONDS
      echo "building $name from $module@$version (log: $LOGS/$name.log)"
      go get "$package@$version" >"$LOGS/$name.log" 2>&1
      nice -n 10 go build -p 2 -trimpath -ldflags "-s -w ${LDFLAGS:-}" -o "$BIN/$name" "$package" \
        >>"$LOGS/$name.log" 2>&1 || { tail -20 "$LOGS/$name.log"; exit 1; }
      echo "$stamp" >"$STAMPS/$name"
      echo "built $name in $((SECONDS - started))s"
    done
  )
  rm -rf "$wrapper"
}

# etcd's own main package lives in a module with replace directives; its server module exports the same entry.
build_etcd() {
  local stamp="go.etcd.io/etcd/server/v3@$ETCD_VERSION $GO_VERSION"
  if fresh etcd "$stamp"; then echo "cached: etcd ($ETCD_VERSION)"; return; fi
  local wrapper; wrapper="$(mktemp -d)"
  (
    cd "$wrapper"
    go mod init lci.local/etcd >/dev/null 2>&1
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
    echo "building etcd $ETCD_VERSION (log: $LOGS/etcd.log)"
    local started=$SECONDS
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >"$LOGS/etcd.log" 2>&1
    nice -n 10 go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/etcd" . >>"$LOGS/etcd.log" 2>&1 \
      || { tail -20 "$LOGS/etcd.log"; exit 1; }
    echo "$stamp" >"$STAMPS/etcd"
    echo "built etcd in $((SECONDS - started))s"
  )
  rm -rf "$wrapper"
}

# The CRDs each Flux controller ships with, copied from its module.
install_flux_crds() {
  local dir="$LCI_TOOLS/flux-crds" stamp="source $FLUX_SOURCE_VERSION kustomize $FLUX_KUSTOMIZE_VERSION"
  [ "$(cat "$STAMPS/flux-crds" 2>/dev/null)" = "$stamp" ] && { echo "cached: flux CRDs"; return; }
  rm -rf "$dir" && mkdir -p "$dir"
  local module
  for module in "github.com/fluxcd/source-controller@$FLUX_SOURCE_VERSION" \
                "github.com/fluxcd/kustomize-controller@$FLUX_KUSTOMIZE_VERSION"; do
    cp "$(go mod download -json "$module" | jq -r .Dir)"/config/crd/bases/*.yaml "$dir/"
  done
  chmod u+w "$dir"/*.yaml
  echo "$stamp" >"$STAMPS/flux-crds"
  echo "installed flux CRDs: $(ls "$dir" | tr '\n' ' ')"
}

# kwok's "fast" stages (nodes Ready with lease heartbeats, pods Ready at once), rendered from its module.
install_kwok_stages() {
  local file="$LCI_TOOLS/kwok-stages.yaml" stamp="kwok $KWOK_VERSION"
  [ "$(cat "$STAMPS/kwok-stages" 2>/dev/null)" = "$stamp" ] && { echo "cached: kwok stages"; return; }
  kubectl kustomize "$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | jq -r .Dir)/kustomize/stage/fast" >"$file"
  echo "$stamp" >"$STAMPS/kwok-stages"
  echo "installed kwok stages: $file"
}

started=$SECONDS
build_etcd
K8S_VERSION_FLAGS="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
K8S_VERSION_FLAGS+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
LDFLAGS="$K8S_VERSION_FLAGS" build k8s.io/kubernetes "$K8S_VERSION" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler
build github.com/fluxcd/source-controller "$FLUX_SOURCE_VERSION" source-controller=github.com/fluxcd/source-controller
build github.com/fluxcd/kustomize-controller "$FLUX_KUSTOMIZE_VERSION" \
  kustomize-controller=github.com/fluxcd/kustomize-controller
build sigs.k8s.io/kwok "$KWOK_VERSION" kwok=sigs.k8s.io/kwok/cmd/kwok
install_flux_crds
install_kwok_stages
echo "control plane tools ready in $((SECONDS - started))s under $BIN"
