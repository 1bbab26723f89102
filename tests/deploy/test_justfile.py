"""The justfile's recipes in DRY_RUN mode: the exact commands they would run, and their refusals."""

import subprocess

import pytest

from conftest import ROOT, run, tool

AZURE = {"AZURE_SUBSCRIPTION": "sub-1", "AZURE_OPENAI_RESOURCE": "oai-1"}
SCOPE = "--subscription sub-1 --resource-group rg-local-code-interpreter"


def just(*args: str, env: dict | None = None, check: bool = True):
    return run(tool("just"), "--justfile", str(ROOT / "justfile"), *args, env={"DRY_RUN": "1", **(env or {})}, check=check)


def commands(*args: str, env: dict | None = None) -> list[str]:
    return just(*args, env=env).stdout.splitlines()


def test_azure_cluster_and_identity_setup_commands():
    assert commands("azure-aks-create", "azure-aks-enable-workload-identity", "azure-aks-get-credentials",
                    "azure-identity-create", "azure-identity-show", env=AZURE) == [
        "az group create --subscription sub-1 --name rg-local-code-interpreter --location eastus2",
        f"az aks create {SCOPE} --name aks-local-code-interpreter --location eastus2 --node-count 3"
        " --node-vm-size Standard_D4s_v5 --zones 1 2 3 --nodepool-labels hyperlight.dev/hypervisor=true"
        " --enable-oidc-issuer --enable-workload-identity --network-plugin azure --network-plugin-mode overlay"
        " --network-dataplane cilium --enable-app-routing --generate-ssh-keys",
        f"az aks update {SCOPE} --name aks-local-code-interpreter --enable-oidc-issuer --enable-workload-identity",
        f"az aks get-credentials {SCOPE} --name aks-local-code-interpreter --overwrite-existing",
        f"az identity create {SCOPE} --name id-local-code-interpreter --location eastus2",
        f"az identity show {SCOPE} --name id-local-code-interpreter --query clientId --output tsv",
    ]


def test_federated_credential_trusts_the_app_service_account_of_the_cluster_issuer():
    result = just("azure-identity-federate", env=AZURE)
    assert result.stdout.splitlines() == [
        f"az identity federated-credential create {SCOPE} --identity-name id-local-code-interpreter"
        " --name local-code-interpreter --issuer '<oidcIssuerProfile.issuerUrl>'"
        " --subject system:serviceaccount:local-code-interpreter:local-code-interpreter"
        " --audience api://AzureADTokenExchange"
    ]
    assert (f"az aks show {SCOPE} --name aks-local-code-interpreter --query oidcIssuerProfile.issuerUrl"
            " --output tsv") in result.stderr


def test_role_assignment_grants_openai_user_on_the_openai_resource_only():
    result = just("azure-role-assign", env={**AZURE, "AZURE_LOCATION": "westeurope"})
    assert result.stdout.splitlines() == [
        "az role assignment create --subscription sub-1 --assignee-object-id '<principalId>'"
        " --assignee-principal-type ServicePrincipal --role 'Cognitive Services OpenAI User' --scope '<id>'"
    ]
    assert (f"az cognitiveservices account show {SCOPE} --name oai-1 --query id --output tsv") in result.stderr
    assert f"az identity show {SCOPE} --name id-local-code-interpreter --query principalId" in result.stderr


@pytest.mark.parametrize("recipe", ["azure-aks-create", "azure-identity-federate", "azure-aks-get-credentials"])
def test_a_missing_subscription_stops_naming_it(recipe):
    result = just(recipe, env={"AZURE_SUBSCRIPTION": ""}, check=False)
    assert result.returncode != 0
    assert "error: AZURE_SUBSCRIPTION is required" in result.stderr
    assert result.stdout == ""


def test_role_assignment_needs_the_openai_resource():
    result = just("azure-role-assign", env={"AZURE_SUBSCRIPTION": "sub-1", "AZURE_OPENAI_RESOURCE": ""}, check=False)
    assert result.returncode != 0 and "error: AZURE_OPENAI_RESOURCE is required" in result.stderr


def test_k8s_deploy_applies_the_rendered_overlay():
    tool("kustomize")
    assert commands("k8s-deploy", env={"MANAGED_IDENTITY_CLIENT_ID": ""}) == ["kubectl apply --filename -"]
    assert commands("ENV=prod", "k8s-deploy", env={"MANAGED_IDENTITY_CLIENT_ID": "client-1"}) == [
        "kubectl apply --filename -",
        "kubectl annotate serviceaccount local-code-interpreter --namespace local-code-interpreter --overwrite"
        " azure.workload.identity/client-id=client-1",
        "kubectl rollout restart deployment/local-code-interpreter --namespace local-code-interpreter",
    ]
    assert commands("ENV=prod", "k8s-delete") == ["kubectl delete --ignore-not-found --filename -"]


def test_k8s_recipes_refuse_an_unknown_env():
    result = just("ENV=staging", "k8s-deploy", check=False)
    assert result.returncode != 0 and "ENV must be dev or prod, not 'staging'" in result.stderr


def test_port_forward_and_auth_secret():
    assert commands("k8s-port-forward", "k8s-auth-secret") == [
        "kubectl port-forward --namespace local-code-interpreter service/local-code-interpreter 8090:8090",
        "kubectl create secret generic local-code-interpreter-auth --namespace local-code-interpreter"
        " --from-file=token=/dev/stdin",
    ]


REVISION = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def test_container_recipes_use_the_engine_registry_and_tag():
    env = {"CONTAINER_ENGINE": "podman", "IMAGE_REGISTRY": "registry.example", "IMAGE_TAG": "1.2.3"}
    assert commands("docker-build", "docker-push", "docker-run", env=env) == [
        "podman build --build-arg WITH_HYPERLIGHT=false --build-arg VERSION=1.2.3"
        f" --build-arg REVISION={REVISION} --tag registry.example/local-code-interpreter:1.2.3 .",
        "podman push registry.example/local-code-interpreter:1.2.3",
        "podman run --rm --read-only --user 65534:65534 --cap-drop ALL --security-opt no-new-privileges"
        " --tmpfs /tmp --publish 127.0.0.1:8090:8090 --env DEVUI_AUTH_TOKEN"
        " registry.example/local-code-interpreter:1.2.3",
    ]
    result = just("docker-push", env={"IMAGE_REGISTRY": ""}, check=False)
    assert result.returncode != 0 and "error: IMAGE_REGISTRY is required" in result.stderr


def test_flux_bootstrap_points_flux_at_the_cluster_folder():
    assert commands("flux-bootstrap", env={"GITHUB_OWNER": "octo", "GITHUB_TOKEN": "t"}) == [
        "flux bootstrap github --owner=octo --repository=local-code-interpreter --branch=main"
        " --path=clusters/aks-prod --personal --components=source-controller,kustomize-controller"
    ]
    result = just("flux-bootstrap", env={"GITHUB_OWNER": "octo", "GITHUB_TOKEN": ""}, check=False)
    assert result.returncode != 0 and "error: GITHUB_TOKEN is required" in result.stderr
