# Build the image, set up AKS with workload identity, deploy, validate. `just --list` describes the recipes.
# Set variables in the environment or on the command line: `just ENV=prod k8s-deploy`.
# DRY_RUN=1 prints the az/kubectl/flux/container commands instead of running them (values that would be
# read from Azure show as <placeholders>).

set shell := ["bash", "-euo", "pipefail", "-c"]
set quiet

export DRY_RUN := env("DRY_RUN", "")
RUN := "scripts/run-or-print"
QUERY := "scripts/run-or-print --query"

CONTAINER_ENGINE := env("CONTAINER_ENGINE", "docker")
IMAGE_REGISTRY := env("IMAGE_REGISTRY", "")
IMAGE_NAME := "local-code-interpreter"
IMAGE_TAG := env("IMAGE_TAG", `git rev-parse --short HEAD 2>/dev/null || echo dev`)
REVISION := `git rev-parse HEAD 2>/dev/null || echo unknown`
WITH_HYPERLIGHT := env("WITH_HYPERLIGHT", "false")
IMAGE := if IMAGE_REGISTRY == "" { IMAGE_NAME + ":" + IMAGE_TAG } else { IMAGE_REGISTRY + "/" + IMAGE_NAME + ":" + IMAGE_TAG }

ENV := env("ENV", "dev")
# Each environment has its own namespace, managed identity and federated credential, so dev and prod can share a
# cluster. The overlays set the namespace (overlays/ENV/kustomization.yaml) and the identity's client ID
# (overlays/ENV/settings.yaml): they are the source of truth, no recipe annotates anything on the cluster.
NAMESPACE := "lci-" + ENV
SERVICE_ACCOUNT := "local-code-interpreter"

AZURE_SUBSCRIPTION := env("AZURE_SUBSCRIPTION", "")
AZURE_RESOURCE_GROUP := env("AZURE_RESOURCE_GROUP", "rg-local-code-interpreter")
AZURE_LOCATION := env("AZURE_LOCATION", "eastus2")
AZURE_OPENAI_RESOURCE := env("AZURE_OPENAI_RESOURCE", "")
AZURE_OPENAI_RESOURCE_GROUP := env("AZURE_OPENAI_RESOURCE_GROUP", AZURE_RESOURCE_GROUP)
AKS_CLUSTER := env("AKS_CLUSTER", "aks-local-code-interpreter")
# The system pool runs only the cluster's own add-ons (tainted CriticalAddonsOnly); the app runs on a user pool.
AKS_SYSTEM_VM_SIZE := env("AKS_SYSTEM_VM_SIZE", "Standard_D2s_v5")
# The user pool's VM size must allow nested virtualization, which the Hyperlight sandbox needs.
AKS_NODE_VM_SIZE := env("AKS_NODE_VM_SIZE", "Standard_D4s_v5")
AKS_NODE_COUNT := env("AKS_NODE_COUNT", "3")
MANAGED_IDENTITY := env("MANAGED_IDENTITY", "id-local-code-interpreter-" + ENV)
# The Azure Container Registry the overlays' image comes from (<ACR_NAME>.azurecr.io).
ACR_NAME := env("ACR_NAME", "")
# The Key Vault that holds the Ingress's TLS certificate.
KEY_VAULT := env("KEY_VAULT", "")
# The cluster's age key for SOPS: kustomize-controller holds it as flux-system/sops-age; keep a backup.
export SOPS_AGE_KEY_FILE := env("SOPS_AGE_KEY_FILE", env("HOME", "~") + "/.config/sops/age/" + AKS_CLUSTER + ".agekey")
PYTHON := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

GITHUB_OWNER := env("GITHUB_OWNER", "")
GITHUB_REPOSITORY := env("GITHUB_REPOSITORY", "local-code-interpreter")

AZ_SUB := "--subscription " + AZURE_SUBSCRIPTION
AZ_RG := AZ_SUB + " --resource-group " + AZURE_RESOURCE_GROUP

# List the recipes.
default:
    just --list

# Stop with a message naming a required variable that is empty.
[private]
require NAME VALUE:
    [ -n "{{ VALUE }}" ] || { echo "error: {{ NAME }} is required: just {{ NAME }}=... <recipe>" >&2; exit 1; }

# Build the image (WITH_HYPERLIGHT=true adds the Hyperlight sandbox, which prod's pods use).
docker-build:
    {{ RUN }} {{ CONTAINER_ENGINE }} build --build-arg WITH_HYPERLIGHT={{ WITH_HYPERLIGHT }} --build-arg VERSION={{ IMAGE_TAG }} --build-arg REVISION={{ REVISION }} --tag {{ IMAGE }} .

# Push the image to IMAGE_REGISTRY (log in first, e.g. `az acr login --name <registry>`).
docker-push: (require "IMAGE_REGISTRY" IMAGE_REGISTRY)
    {{ RUN }} {{ CONTAINER_ENGINE }} push {{ IMAGE }}

# Run the image locally as the cluster runs it: read-only, unprivileged, /tmp the only writable path.
docker-run:
    {{ RUN }} {{ CONTAINER_ENGINE }} run --rm --read-only --user 65534:65534 --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp --publish 127.0.0.1:8090:8090 --env DEVUI_AUTH_TOKEN {{ IMAGE }}

[private]
require-env:
    [[ "{{ ENV }}" =~ ^(dev|prod)$ ]] || { echo "error: ENV must be dev or prod, not '{{ ENV }}'" >&2; exit 1; }

ROTATE := env("ROTATE", "")
ROTATE_FLAG := if ROTATE == "" { "" } else { "--rotate" }

# Apply overlays/dev to the current kubectl context. Prod is applied by Flux from git (commit and push instead).
k8s-deploy: require-env
    [ "{{ ENV }}" = dev ] || { echo "error: prod is deployed by Flux from git: commit and push (see README, Deployment)" >&2; exit 1; }
    kustomize build overlays/{{ ENV }} | {{ RUN }} kubectl apply --filename -

# Delete everything overlays/ENV created (the namespace included).
k8s-delete: require-env
    kustomize build overlays/{{ ENV }} | {{ RUN }} kubectl delete --ignore-not-found --filename -

# The DevUI bearer token Secret, idempotent (an existing token is kept; ROTATE=1 replaces it). The token is random,
# or read from the file SECRET_VALUE_FILE names (`-`: standard input); it only ever travels through pipes.
# prod: overlays/prod/devui-auth.sops.yaml, encrypted for the cluster's age key (`just sops-age-key` first):
# commit it and Flux applies it. dev: created in the cluster directly (lci-dev is not deployed from git), before
# or after `k8s-deploy`; a running Deployment is restarted to read the new token.
k8s-auth-secret: require-env
    if [ "{{ ENV }}" = prod ]; then \
      {{ RUN }} {{ PYTHON }} scripts/secret-file {{ ROTATE_FLAG }} overlays/prod/devui-auth.sops.yaml lci-prod local-code-interpreter-auth token; \
    else \
      kubectl create namespace {{ NAMESPACE }} --dry-run=client --output yaml | {{ RUN }} kubectl apply --filename -; \
      if [ -z "{{ ROTATE }}" ] && [ -n "$({{ QUERY }} kubectl get secret local-code-interpreter-auth --namespace {{ NAMESPACE }} --ignore-not-found --output name)" ]; then \
        echo "kept the Secret {{ NAMESPACE }}/local-code-interpreter-auth (ROTATE=1 replaces it)" >&2; \
      else \
        { if [ -n "${SECRET_VALUE_FILE:-}" ]; then cat -- "$SECRET_VALUE_FILE"; else {{ PYTHON }} -c 'import secrets; print(secrets.token_hex(32), end="")'; fi; } | \
          kubectl create secret generic local-code-interpreter-auth --namespace {{ NAMESPACE }} --from-file=token=/dev/stdin --dry-run=client --output yaml | \
          {{ RUN }} kubectl apply --filename -; \
        if [ -n "$({{ QUERY }} kubectl get deployment local-code-interpreter --namespace {{ NAMESPACE }} --ignore-not-found --output name)" ]; then \
          {{ RUN }} kubectl rollout restart deployment/local-code-interpreter --namespace {{ NAMESPACE }}; \
        fi; \
      fi; \
    fi

# Forward http://127.0.0.1:8090 to the service.
k8s-port-forward: require-env
    {{ RUN }} kubectl port-forward --namespace {{ NAMESPACE }} service/local-code-interpreter 8090:8090

# Resource group and AKS cluster: OIDC issuer, workload identity, Azure CNI powered by Cilium, app routing, no SSH
# keys; a system pool for the cluster's add-ons and a user pool over 3 zones, labelled for the Hyperlight plugin.
azure-aks-create: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az group create {{ AZ_SUB }} --name {{ AZURE_RESOURCE_GROUP }} --location {{ AZURE_LOCATION }}
    {{ RUN }} az aks create {{ AZ_RG }} --name {{ AKS_CLUSTER }} --location {{ AZURE_LOCATION }} --nodepool-name system --node-count 2 --node-vm-size {{ AKS_SYSTEM_VM_SIZE }} --zones 1 2 3 --nodepool-taints CriticalAddonsOnly=true:NoSchedule --enable-oidc-issuer --enable-workload-identity --network-plugin azure --network-plugin-mode overlay --network-dataplane cilium --enable-app-routing --no-ssh-key
    {{ RUN }} az aks nodepool add {{ AZ_RG }} --cluster-name {{ AKS_CLUSTER }} --name hyperlight --mode User --node-count {{ AKS_NODE_COUNT }} --node-vm-size {{ AKS_NODE_VM_SIZE }} --zones 1 2 3 --labels hyperlight.dev/enabled=true hyperlight.dev/hypervisor=kvm

# Turn on the OIDC issuer and workload identity on an existing cluster.
azure-aks-enable-workload-identity: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az aks update {{ AZ_RG }} --name {{ AKS_CLUSTER }} --enable-oidc-issuer --enable-workload-identity

# Let the cluster pull from the registry: grants AcrPull on ACR_NAME to the kubelet identity, then checks a pull.
azure-acr-attach: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) (require "ACR_NAME" ACR_NAME)
    {{ RUN }} az aks update {{ AZ_RG }} --name {{ AKS_CLUSTER }} --attach-acr {{ ACR_NAME }}
    {{ RUN }} az aks check-acr {{ AZ_RG }} --name {{ AKS_CLUSTER }} --acr {{ ACR_NAME }}.azurecr.io

# Merge the cluster's credentials into ~/.kube/config.
azure-aks-get-credentials: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az aks get-credentials {{ AZ_RG }} --name {{ AKS_CLUSTER }} --overwrite-existing

# The user-assigned managed identity ENV's pods sign in as (one per environment).
azure-identity-create: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) require-env
    {{ RUN }} az identity create {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --location {{ AZURE_LOCATION }}

# Trust the cluster's OIDC issuer to vouch for ENV's service account (subject: its namespace's service account).
azure-identity-federate: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) require-env
    {{ RUN }} az identity federated-credential create {{ AZ_RG }} --identity-name {{ MANAGED_IDENTITY }} --name {{ NAMESPACE }} --issuer "$({{ QUERY }} az aks show {{ AZ_RG }} --name {{ AKS_CLUSTER }} --query oidcIssuerProfile.issuerUrl --output tsv)" --subject system:serviceaccount:{{ NAMESPACE }}:{{ SERVICE_ACCOUNT }} --audience api://AzureADTokenExchange

# Print ENV's identity's client ID: put it in overlays/ENV/settings.yaml (the ServiceAccount's client-id) and commit.
azure-identity-show: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) require-env
    {{ RUN }} az identity show {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --query clientId --output tsv

# Let ENV's identity call the Azure OpenAI resource's models: data plane only, no keys, no management.
azure-role-assign: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) (require "AZURE_OPENAI_RESOURCE" AZURE_OPENAI_RESOURCE) require-env
    {{ RUN }} az role assignment create {{ AZ_SUB }} --assignee-object-id "$({{ QUERY }} az identity show {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --query principalId --output tsv)" --assignee-principal-type ServicePrincipal --role "Cognitive Services OpenAI User" --scope "$({{ QUERY }} az cognitiveservices account show {{ AZ_SUB }} --resource-group {{ AZURE_OPENAI_RESOURCE_GROUP }} --name {{ AZURE_OPENAI_RESOURCE }} --query id --output tsv)"

# Let the app routing add-on read the Ingress's TLS certificate from KEY_VAULT (the certificate URI goes in
# overlays/prod/ingress.yaml).
azure-ingress-tls: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) (require "KEY_VAULT" KEY_VAULT)
    {{ RUN }} az aks approuting update {{ AZ_RG }} --name {{ AKS_CLUSTER }} --enable-kv --attach-kv "$({{ QUERY }} az keyvault show {{ AZ_SUB }} --name {{ KEY_VAULT }} --query id --output tsv)"

# Install Flux (source-, kustomize- and notification-controller) on the current kubectl context and point it at
# clusters/aks-prod of this GitHub repository. The GitHub token is read from GITHUB_TOKEN, never an argument.
flux-bootstrap: (require "GITHUB_OWNER" GITHUB_OWNER) (require "GITHUB_TOKEN" env("GITHUB_TOKEN", ""))
    {{ RUN }} flux bootstrap github --owner={{ GITHUB_OWNER }} --repository={{ GITHUB_REPOSITORY }} --branch=main --path=clusters/aks-prod --personal --components=source-controller,kustomize-controller,notification-controller

# The cluster's age key for SOPS, idempotent: created once at SOPS_AGE_KEY_FILE (kept when it exists), its public
# half written to .sops.yaml as the recipient, its private half applied as the Secret flux-system/sops-age that
# kustomize-controller decrypts with (the namespace is created if missing, so this can run before flux-bootstrap
# and Flux's first reconciliation already decrypts). Back the key file up.
sops-age-key:
    kubectl create namespace flux-system --dry-run=client --output yaml | {{ RUN }} kubectl apply --filename -
    if [ ! -f "$SOPS_AGE_KEY_FILE" ]; then {{ RUN }} mkdir -p "$(dirname "$SOPS_AGE_KEY_FILE")"; {{ RUN }} age-keygen --output "$SOPS_AGE_KEY_FILE"; fi
    recipient="$(if [ -f "$SOPS_AGE_KEY_FILE" ]; then age-keygen -y "$SOPS_AGE_KEY_FILE"; else echo '<age recipient>'; fi)"; \
      {{ RUN }} sed -i -E "s|^( +age: ).*|\1$recipient|" .sops.yaml
    if [ -f "$SOPS_AGE_KEY_FILE" ]; then kubectl create secret generic sops-age --namespace flux-system --from-file=age.agekey="$SOPS_AGE_KEY_FILE" --dry-run=client --output yaml; fi | \
      {{ RUN }} kubectl apply --filename -

# The token GitHub signs push webhooks with, for the Flux Receiver: infrastructure/flux-notifications/
# receiver-token.sops.yaml, idempotent like k8s-auth-secret (ROTATE=1 replaces it). Commit it; give GitHub the same
# value (`sops --decrypt --extract '["stringData"]["token"]' <file>` shows it) and the URL flux-webhook-url prints.
flux-receiver-secret:
    {{ RUN }} {{ PYTHON }} scripts/secret-file {{ ROTATE_FLAG }} infrastructure/flux-notifications/receiver-token.sops.yaml flux-system flux-receiver-token token

# The path GitHub's push webhook must call (append it to https://<the flux-webhook Ingress host>).
flux-webhook-url:
    {{ RUN }} kubectl get receiver github-push --namespace flux-system --output jsonpath='{.status.webhookPath}{"\n"}'

# Render and check every manifest as CI does (kustomize, kubeconform -strict, flux build).
validate:
    scripts/validate-manifests

# Lint the rendered overlays with kube-score and checkov; findings are fixed or ignored with a reason in lint/.
lint:
    scripts/lint-manifests
