"""The justfile's recipes in DRY_RUN mode: the exact commands they would run, and their refusals."""

import subprocess

import pytest

from conftest import ROOT, find, pod_spec, render, run, tool

AZURE = {"AZURE_SUBSCRIPTION": "sub-1", "AZURE_OPENAI_RESOURCE": "oai-1"}
SCOPE = "--subscription sub-1 --resource-group rg-local-code-interpreter"


def just(*args: str, env: dict | None = None, check: bool = True):
    return run(tool("just"), "--justfile", str(ROOT / "justfile"), *args, env={"DRY_RUN": "1", **(env or {})}, check=check)


def commands(*args: str, env: dict | None = None) -> list[str]:
    return just(*args, env=env).stdout.splitlines()


def test_azure_cluster_setup_commands():
    assert commands("azure-aks-create", "azure-aks-enable-workload-identity", "azure-aks-get-credentials",
                    env=AZURE) == [
        "az group create --subscription sub-1 --name rg-local-code-interpreter --location eastus2",
        # The system pool keeps to the cluster's add-ons; no SSH key on any node.
        f"az aks create {SCOPE} --name aks-local-code-interpreter --location eastus2 --nodepool-name system"
        " --node-count 2 --node-vm-size Standard_D2s_v5 --zones 1 2 3"
        " --nodepool-taints CriticalAddonsOnly=true:NoSchedule --enable-oidc-issuer --enable-workload-identity"
        " --network-plugin azure --network-plugin-mode overlay --network-dataplane cilium --enable-app-routing"
        " --no-ssh-key",
        # The app runs on a user pool over three zones, labelled for the Hyperlight device plugin.
        f"az aks nodepool add {SCOPE} --cluster-name aks-local-code-interpreter --name hyperlight --mode User"
        " --node-count 3 --node-vm-size Standard_D4s_v5 --zones 1 2 3 --labels hyperlight.dev/enabled=true hyperlight.dev/hypervisor=kvm",
        f"az aks update {SCOPE} --name aks-local-code-interpreter --enable-oidc-issuer --enable-workload-identity",
        f"az aks get-credentials {SCOPE} --name aks-local-code-interpreter --overwrite-existing",
    ]
    recipe = just("--show", "azure-aks-create").stdout
    assert "--generate-ssh-keys" not in recipe and "--ssh-key-value" not in recipe


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_each_environment_has_its_own_identity_trusting_its_own_service_account(env):
    assert commands(f"ENV={env}", "azure-identity-create", "azure-identity-show", env=AZURE) == [
        f"az identity create {SCOPE} --name id-local-code-interpreter-{env} --location eastus2",
        f"az identity show {SCOPE} --name id-local-code-interpreter-{env} --query clientId --output tsv",
    ]
    result = just(f"ENV={env}", "azure-identity-federate", env=AZURE)
    assert result.stdout.splitlines() == [
        f"az identity federated-credential create {SCOPE} --identity-name id-local-code-interpreter-{env}"
        f" --name lci-{env} --issuer '<oidcIssuerProfile.issuerUrl>'"
        f" --subject system:serviceaccount:lci-{env}:local-code-interpreter"
        " --audience api://AzureADTokenExchange"
    ]
    assert (f"az aks show {SCOPE} --name aks-local-code-interpreter --query oidcIssuerProfile.issuerUrl"
            " --output tsv") in result.stderr


def test_the_subject_is_the_service_account_the_overlay_deploys():
    for env in ("dev", "prod"):
        line = commands(f"ENV={env}", "azure-identity-federate", env=AZURE)[0]
        subject = line.split("--subject ")[1].split()[0]
        objects = render(f"overlays/{env}")
        account = find(objects, "ServiceAccount")["metadata"]
        assert subject == f"system:serviceaccount:{account['namespace']}:{account['name']}"
        assert pod_spec(objects)["serviceAccountName"] == account["name"]


def test_acr_attach_grants_the_kubelet_identity_acrpull_and_checks_a_pull():
    assert commands("azure-acr-attach", env={**AZURE, "ACR_NAME": "lciacr"}) == [
        f"az aks update {SCOPE} --name aks-local-code-interpreter --attach-acr lciacr",
        f"az aks check-acr {SCOPE} --name aks-local-code-interpreter --acr lciacr.azurecr.io",
    ]
    result = just("azure-acr-attach", env={**AZURE, "ACR_NAME": ""}, check=False)
    assert result.returncode != 0 and "error: ACR_NAME is required" in result.stderr


def test_ingress_tls_attaches_the_key_vault_to_app_routing():
    result = just("azure-ingress-tls", env={**AZURE, "KEY_VAULT": "kv-lci"})
    assert result.stdout.splitlines() == [
        f"az aks approuting update {SCOPE} --name aks-local-code-interpreter --enable-kv --attach-kv '<id>'"]
    assert "az keyvault show --subscription sub-1 --name kv-lci --query id --output tsv" in result.stderr


def test_role_assignment_grants_openai_user_on_the_openai_resource_only():
    result = just("ENV=prod", "azure-role-assign", env={**AZURE, "AZURE_LOCATION": "westeurope"})
    assert result.stdout.splitlines() == [
        "az role assignment create --subscription sub-1 --assignee-object-id '<principalId>'"
        " --assignee-principal-type ServicePrincipal --role 'Cognitive Services OpenAI User' --scope '<id>'"
    ]
    assert (f"az cognitiveservices account show {SCOPE} --name oai-1 --query id --output tsv") in result.stderr
    assert f"az identity show {SCOPE} --name id-local-code-interpreter-prod --query principalId" in result.stderr


@pytest.mark.parametrize("recipe", ["azure-aks-create", "azure-identity-federate", "azure-aks-get-credentials"])
def test_a_missing_subscription_stops_naming_it(recipe):
    result = just(recipe, env={"AZURE_SUBSCRIPTION": ""}, check=False)
    assert result.returncode != 0
    assert "error: AZURE_SUBSCRIPTION is required" in result.stderr
    assert result.stdout == ""


def test_role_assignment_needs_the_openai_resource():
    result = just("azure-role-assign", env={"AZURE_SUBSCRIPTION": "sub-1", "AZURE_OPENAI_RESOURCE": ""}, check=False)
    assert result.returncode != 0 and "error: AZURE_OPENAI_RESOURCE is required" in result.stderr


def test_k8s_deploy_applies_the_dev_overlay_and_leaves_prod_to_flux():
    tool("kustomize")
    assert commands("ENV=dev", "k8s-deploy") == ["kubectl apply --filename -"]
    result = just("ENV=prod", "k8s-deploy", check=False)
    assert result.returncode != 0 and "prod is deployed by Flux" in result.stderr and result.stdout == ""
    assert commands("ENV=prod", "k8s-delete") == ["kubectl delete --ignore-not-found --filename -"]


def test_k8s_recipes_refuse_an_unknown_env():
    result = just("ENV=staging", "k8s-deploy", check=False)
    assert result.returncode != 0 and "ENV must be dev or prod, not 'staging'" in result.stderr


def test_port_forward_goes_to_the_environment_namespace():
    assert commands("ENV=prod", "k8s-port-forward") == [
        "kubectl port-forward --namespace lci-prod service/local-code-interpreter 8090:8090"]


TOKEN = "s3cr3t-token-that-must-never-be-on-a-command-line"


def test_dev_auth_secret_is_idempotent_and_the_token_never_on_a_command_line(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    result = just("ENV=dev", "k8s-auth-secret", env={"SECRET_VALUE_FILE": str(token_file)})
    # The namespace first (a fresh cluster has none), applied, so re-running is harmless.
    assert result.stdout.splitlines() == [
        "kubectl apply --filename -",
        "kubectl apply --filename -",
    ]
    assert "kubectl get secret local-code-interpreter-auth --namespace lci-dev --ignore-not-found" in result.stderr
    # Restarts the Deployment only if it runs (a fresh namespace has none yet): a dry run cannot know, so asks.
    assert "kubectl get deployment local-code-interpreter --namespace lci-dev --ignore-not-found" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    recipe = just("--show", "k8s-auth-secret").stdout
    assert "--from-file=token=/dev/stdin" in recipe and "--from-literal" not in recipe


def test_prod_auth_secret_and_receiver_token_are_written_encrypted_for_git():
    assert commands("ENV=prod", "k8s-auth-secret") == [
        ".venv/bin/python scripts/secret-file overlays/prod/devui-auth.sops.yaml lci-prod"
        " local-code-interpreter-auth token"]
    assert commands("ENV=prod", "k8s-auth-secret", env={"ROTATE": "1"}) == [
        ".venv/bin/python scripts/secret-file --rotate overlays/prod/devui-auth.sops.yaml lci-prod"
        " local-code-interpreter-auth token"]
    assert commands("flux-receiver-secret") == [
        ".venv/bin/python scripts/secret-file infrastructure/flux-notifications/receiver-token.sops.yaml"
        " flux-system flux-receiver-token token"]


def test_sops_age_key_hands_kustomize_controller_the_key_from_a_file(tmp_path):
    key = tmp_path / "cluster.agekey"
    lines = commands("sops-age-key", env={"SOPS_AGE_KEY_FILE": str(key)})
    assert lines == [
        "kubectl apply --filename -",  # the flux-system namespace, so this can run before flux-bootstrap
        f"mkdir -p {tmp_path}",
        f"age-keygen --output {key}",
        "sed -i -E 's|^( +age: ).*|\\1<age recipient>|' .sops.yaml",
        "kubectl apply --filename -",
    ]


def test_no_recipe_puts_a_token_on_a_command_line():
    text = (ROOT / "justfile").read_text()
    assert "--from-literal" not in text
    for variable in ("GITHUB_TOKEN", "DEVUI_AUTH_TOKEN", "SECRET_VALUE_FILE"):
        for line in text.splitlines():
            if f"${variable}" in line or f"${{{variable}" in line:
                assert "cat -- " in line, f"{variable} used on a command line: {line.strip()}"
    out = just("flux-bootstrap", env={"GITHUB_OWNER": "octo", "GITHUB_TOKEN": TOKEN})
    assert TOKEN not in out.stdout + out.stderr


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
        " --path=clusters/aks-prod --personal"
        " --components=source-controller,kustomize-controller,notification-controller"
    ]
    result = just("flux-bootstrap", env={"GITHUB_OWNER": "octo", "GITHUB_TOKEN": ""}, check=False)
    assert result.returncode != 0 and "error: GITHUB_TOKEN is required" in result.stderr
