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
NAMESPACE := "local-code-interpreter"
SERVICE_ACCOUNT := "local-code-interpreter"

AZURE_SUBSCRIPTION := env("AZURE_SUBSCRIPTION", "")
AZURE_RESOURCE_GROUP := env("AZURE_RESOURCE_GROUP", "rg-local-code-interpreter")
AZURE_LOCATION := env("AZURE_LOCATION", "eastus2")
AZURE_OPENAI_RESOURCE := env("AZURE_OPENAI_RESOURCE", "")
AZURE_OPENAI_RESOURCE_GROUP := env("AZURE_OPENAI_RESOURCE_GROUP", AZURE_RESOURCE_GROUP)
AKS_CLUSTER := env("AKS_CLUSTER", "aks-local-code-interpreter")
# A VM size with nested virtualization, which the Hyperlight sandbox needs.
AKS_NODE_VM_SIZE := env("AKS_NODE_VM_SIZE", "Standard_D4s_v5")
MANAGED_IDENTITY := env("MANAGED_IDENTITY", "id-local-code-interpreter")
MANAGED_IDENTITY_CLIENT_ID := env("MANAGED_IDENTITY_CLIENT_ID", "")

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

# Apply overlays/ENV; with MANAGED_IDENTITY_CLIENT_ID, also point the service account at that identity.
k8s-deploy: require-env
    kustomize build overlays/{{ ENV }} | {{ RUN }} kubectl apply --filename -
    if [ -n "{{ MANAGED_IDENTITY_CLIENT_ID }}" ]; then \
      {{ RUN }} kubectl annotate serviceaccount {{ SERVICE_ACCOUNT }} --namespace {{ NAMESPACE }} --overwrite azure.workload.identity/client-id={{ MANAGED_IDENTITY_CLIENT_ID }}; \
      {{ RUN }} kubectl rollout restart deployment/local-code-interpreter --namespace {{ NAMESPACE }}; \
    fi

# Delete everything overlays/ENV created (the namespace included).
k8s-delete: require-env
    kustomize build overlays/{{ ENV }} | {{ RUN }} kubectl delete --ignore-not-found --filename -

# Create the DevUI bearer token Secret from a fresh random token (or DEVUI_AUTH_TOKEN), never written to disk.
k8s-auth-secret:
    { [ -n "${DEVUI_AUTH_TOKEN:-}" ] && printf %s "$DEVUI_AUTH_TOKEN" || openssl rand -hex 32 | tr -d '\n'; } | \
      {{ RUN }} kubectl create secret generic local-code-interpreter-auth --namespace {{ NAMESPACE }} --from-file=token=/dev/stdin

# Forward http://127.0.0.1:8090 to the service.
k8s-port-forward:
    {{ RUN }} kubectl port-forward --namespace {{ NAMESPACE }} service/local-code-interpreter 8090:8090

# Resource group and AKS cluster: OIDC issuer, workload identity, Cilium network policy, app routing, 3 zones.
azure-aks-create: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az group create {{ AZ_SUB }} --name {{ AZURE_RESOURCE_GROUP }} --location {{ AZURE_LOCATION }}
    {{ RUN }} az aks create {{ AZ_RG }} --name {{ AKS_CLUSTER }} --location {{ AZURE_LOCATION }} --node-count 3 --node-vm-size {{ AKS_NODE_VM_SIZE }} --zones 1 2 3 --nodepool-labels hyperlight.dev/hypervisor=true --enable-oidc-issuer --enable-workload-identity --network-plugin azure --network-plugin-mode overlay --network-dataplane cilium --enable-app-routing --generate-ssh-keys

# Turn on the OIDC issuer and workload identity on an existing cluster.
azure-aks-enable-workload-identity: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az aks update {{ AZ_RG }} --name {{ AKS_CLUSTER }} --enable-oidc-issuer --enable-workload-identity

# Merge the cluster's credentials into ~/.kube/config.
azure-aks-get-credentials: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az aks get-credentials {{ AZ_RG }} --name {{ AKS_CLUSTER }} --overwrite-existing

# The user-assigned managed identity the pods sign in as.
azure-identity-create: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az identity create {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --location {{ AZURE_LOCATION }}

# Trust the cluster's OIDC issuer to vouch for the app's service account.
azure-identity-federate: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az identity federated-credential create {{ AZ_RG }} --identity-name {{ MANAGED_IDENTITY }} --name {{ NAMESPACE }} --issuer "$({{ QUERY }} az aks show {{ AZ_RG }} --name {{ AKS_CLUSTER }} --query oidcIssuerProfile.issuerUrl --output tsv)" --subject system:serviceaccount:{{ NAMESPACE }}:{{ SERVICE_ACCOUNT }} --audience api://AzureADTokenExchange

# Print the identity's client ID: the value for MANAGED_IDENTITY_CLIENT_ID and the overlays' client-id.
azure-identity-show: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION)
    {{ RUN }} az identity show {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --query clientId --output tsv

# Let the identity call the Azure OpenAI resource's models: data plane only, no keys, no management.
azure-role-assign: (require "AZURE_SUBSCRIPTION" AZURE_SUBSCRIPTION) (require "AZURE_OPENAI_RESOURCE" AZURE_OPENAI_RESOURCE)
    {{ RUN }} az role assignment create {{ AZ_SUB }} --assignee-object-id "$({{ QUERY }} az identity show {{ AZ_RG }} --name {{ MANAGED_IDENTITY }} --query principalId --output tsv)" --assignee-principal-type ServicePrincipal --role "Cognitive Services OpenAI User" --scope "$({{ QUERY }} az cognitiveservices account show {{ AZ_SUB }} --resource-group {{ AZURE_OPENAI_RESOURCE_GROUP }} --name {{ AZURE_OPENAI_RESOURCE }} --query id --output tsv)"

# Install Flux on the current kubectl context and point it at clusters/aks-prod of this GitHub repository.
flux-bootstrap: (require "GITHUB_OWNER" GITHUB_OWNER) (require "GITHUB_TOKEN" env("GITHUB_TOKEN", ""))
    {{ RUN }} flux bootstrap github --owner={{ GITHUB_OWNER }} --repository={{ GITHUB_REPOSITORY }} --branch=main --path=clusters/aks-prod --personal --components=source-controller,kustomize-controller

# Render and check every manifest as CI does (kustomize, kubeconform -strict, flux build).
validate:
    scripts/validate-manifests
