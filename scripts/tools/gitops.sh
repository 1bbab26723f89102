#!/usr/bin/env bash
# GitOps tool chain beyond k8s.sh, for tests/deploy and the CI manifest job, from pinned Go modules and PyPI:
#   sops + age (encrypt the Secrets committed to git; kustomize-controller decrypts them),
#   kube-score (a linter for the rendered overlays), checkov (in its own venv: its pins clash with ours),
#   kubeconform schemas for the Flux notification API (generated with controller-gen from the
#   notification-controller api module: the controller's own module, which holds the CRD files, is not served by
#   the module proxy) and for CiliumNetworkPolicy (from the cilium module's CRD),
#   and those CRDs themselves in $LCI_TOOLS/crds-extra for the real control plane of tests/e2e.
# Each step is skipped when its stamp names the pinned version. Stamps are prefixed `gitops-`, so they never clash
# with k8s.sh's or controlplane.sh's.
source "$(dirname "$0")/../lib.sh"
ensure_venv requirements-dev.txt

SOPS_VERSION=v3.13.3
AGE_VERSION=v1.3.2
KUBE_SCORE_VERSION=v1.20.0
CHECKOV_VERSION=3.3.30
CONTROLLER_GEN_VERSION=v0.19.0
# The notification-controller release that flux v2.9.5 (k8s.sh's FLUX_VERSION) installs.
NOTIFICATION_API_VERSION=v1.9.4
# Azure CNI powered by Cilium runs Cilium 1.17/1.18 depending on the AKS version; the policy API is the same (v2).
CILIUM_VERSION=v1.18.4
# Bumped when scripts/crd-to-jsonschema.py changes how it converts, so the schemas are regenerated.
CONVERTER=2

BIN="$LCI_TOOLS/bin" SCHEMAS="$LCI_TOOLS/schemas" STAMPS="$LCI_TOOLS/stamps" CRDS="$LCI_TOOLS/crds-extra"
mkdir -p "$BIN" "$SCHEMAS" "$STAMPS" "$CRDS"
export GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

done_already() {  # NAME VERSION PATH
  [ -e "$3" ] && [ "$(cat "$STAMPS/gitops-$1" 2>/dev/null)" = "$2" ] && return 0
  echo "gitops.sh: installing $1 $2"
  started=$SECONDS
  return 1
}
stamp() { echo "$2" > "$STAMPS/gitops-$1"; echo "gitops.sh: $1 done in $((SECONDS - started))s"; }
moddir() { go mod download -json "$1" | jq -r .Dir; }

if ! done_already age "$AGE_VERSION" "$BIN/age-keygen"; then
  nice go install "filippo.io/age/cmd/age@$AGE_VERSION" "filippo.io/age/cmd/age-keygen@$AGE_VERSION"
  stamp age "$AGE_VERSION"
fi

if ! done_already sops "$SOPS_VERSION" "$BIN/sops"; then
  nice go install "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
  stamp sops "$SOPS_VERSION"
fi

if ! done_already kube-score "$KUBE_SCORE_VERSION" "$BIN/kube-score"; then
  nice go install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  stamp kube-score "$KUBE_SCORE_VERSION"
fi

if ! done_already notification-crds "$NOTIFICATION_API_VERSION $CONTROLLER_GEN_VERSION $CONVERTER" "$SCHEMAS/flux-notification"; then
  nice go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
  work="$(mktemp -d)"
  cp -r "$(moddir "github.com/fluxcd/notification-controller/api@$NOTIFICATION_API_VERSION")/." "$work"
  chmod -R u+w "$work"
  # The same generator invocation as the controller's Makefile (`make manifests`), over its api module.
  (cd "$work" && go mod download && "$BIN/controller-gen" crd paths=./... output:crd:artifacts:config="$work/crds")
  rm -f "$CRDS"/notification.toolkit.fluxcd.io_*.yaml
  cp "$work"/crds/*.yaml "$CRDS/"
  rm -rf "$SCHEMAS/flux-notification"
  "$ROOT/.venv/bin/python" "$ROOT/scripts/crd-to-jsonschema.py" "$SCHEMAS/flux-notification" "$work"/crds/*.yaml
  rm -rf "$work"
  stamp notification-crds "$NOTIFICATION_API_VERSION $CONTROLLER_GEN_VERSION $CONVERTER"
fi

if ! done_already cilium-crds "$CILIUM_VERSION $CONVERTER" "$SCHEMAS/cilium"; then
  crd="$(moddir "github.com/cilium/cilium@$CILIUM_VERSION")/pkg/k8s/apis/cilium.io/client/crds/v2"
  rm -rf "$SCHEMAS/cilium"
  "$ROOT/.venv/bin/python" "$ROOT/scripts/crd-to-jsonschema.py" "$SCHEMAS/cilium" \
    "$crd/ciliumnetworkpolicies.yaml" "$crd/ciliumclusterwidenetworkpolicies.yaml"
  cp "$crd/ciliumnetworkpolicies.yaml" "$CRDS/cilium.io_ciliumnetworkpolicies.yaml"
  chmod u+w "$CRDS"/*.yaml
  stamp cilium-crds "$CILIUM_VERSION $CONVERTER"
fi

if ! done_already checkov "$CHECKOV_VERSION" "$LCI_TOOLS/checkov-venv/bin/checkov"; then
  "$(pick_python)" -m venv "$LCI_TOOLS/checkov-venv"
  "$LCI_TOOLS/checkov-venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  ln -sf "$LCI_TOOLS/checkov-venv/bin/checkov" "$BIN/checkov"
  stamp checkov "$CHECKOV_VERSION"
fi
