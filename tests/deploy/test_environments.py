"""What a first deployment on AKS needs from the rendered manifests (issue 15): dev and prod side by side, the
identity from the overlays, probes Flux can trust, the way in, egress options, the SOPS-encrypted Secrets and
Flux's notifications."""
import re

import pytest
import yaml

from conftest import OVERLAYS, ROOT, app_container, find, render

CLIENT_ID = "azure.workload.identity/client-id"
NAMESPACES = {"dev": "lci-dev", "prod": "lci-prod"}


def _identity(obj: dict) -> tuple:
    """What makes an object unique on a cluster: API group, kind, namespace (none for cluster-scoped) and name."""
    group = obj["apiVersion"].rpartition("/")[0]
    return group, obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _go_seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(value) * units[unit] for value, unit in re.findall(r"([\d.]+)([hms])", duration))


def test_dev_and_prod_can_share_a_cluster():
    dev, prod = render("overlays/dev"), render("overlays/prod")
    clashes = {_identity(o) for o in dev} & {_identity(o) for o in prod}
    assert not clashes, f"objects both overlays create: {sorted(clashes)}"
    for overlay, objects in (("dev", dev), ("prod", prod)):
        namespace = NAMESPACES[overlay]
        assert find(objects, "Namespace", namespace)
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == namespace, f"{overlay}: {_identity(obj)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_is_the_source_of_truth_for_the_client_id(overlay):
    settings = [d for d in yaml.safe_load_all((ROOT / f"overlays/{overlay}/settings.yaml").read_text())
                if d["kind"] == "ServiceAccount"]
    written = settings[0]["metadata"]["annotations"][CLIENT_ID]
    rendered = find(render(f"overlays/{overlay}"), "ServiceAccount")["metadata"]["annotations"][CLIENT_ID]
    assert rendered == written
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", rendered)
    base = find(render("base"), "ServiceAccount")["metadata"]["annotations"][CLIENT_ID]
    assert rendered != base
    other = find(render(f"overlays/{'prod' if overlay == 'dev' else 'dev'}"), "ServiceAccount")
    assert rendered != other["metadata"]["annotations"][CLIENT_ID], "each environment has its own identity"
    # Nothing re-annotates it on the cluster: the recipes leave the ServiceAccount to the overlay.
    assert "kubectl annotate" not in (ROOT / "justfile").read_text()


def test_a_stuck_rollout_fails_before_flux_times_out():
    apps = yaml.safe_load((ROOT / "clusters/aks-prod/apps.yaml").read_text())
    for overlay in OVERLAYS:
        deadline = find(render(f"overlays/{overlay}"), "Deployment")["spec"]["progressDeadlineSeconds"]
        assert deadline < _go_seconds(apps["spec"]["timeout"]), (deadline, apps["spec"]["timeout"])
    startup = app_container(render("overlays/prod"))["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget < find(render("overlays/prod"), "Deployment")["spec"]["progressDeadlineSeconds"], \
        "a pod whose self-check never passes must be restarted before the rollout is declared failed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_carries_the_common_labels(overlay):
    for obj in render(f"overlays/{overlay}"):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "local-code-interpreter", _identity(obj)
        if obj["kind"] in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Ingress"):
            assert labels.get("app.kubernetes.io/name") == "local-code-interpreter", _identity(obj)


def test_prod_ingress_is_the_app_routing_way_in_with_tls_and_cookie_affinity():
    prod = render("overlays/prod")
    ingress = find(prod, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "webapprouting.kubernetes.azure.com"
    (tls,) = ingress["spec"]["tls"]
    # The add-on writes the Key Vault certificate to keyvault-<Ingress name>.
    assert tls["secretName"] == f"keyvault-{ingress['metadata']['name']}"
    assert re.fullmatch(r"https://[^/]+\.vault\.azure\.net/certificates/[^/]+",
                        annotations["kubernetes.azure.com/tls-cert-keyvault-uri"])
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-secure"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    (rule,) = ingress["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]]
    (path,) = rule["http"]["paths"]
    service = find(prod, "Service")
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # The NetworkPolicy admits exactly the namespace where the add-on's nginx runs.
    policy = find(prod, "NetworkPolicy")["spec"]
    sources = [peer["namespaceSelector"]["matchLabels"] for rule in policy["ingress"] for peer in rule["from"]]
    assert sources == [{"kubernetes.io/metadata.name": "app-routing-system"}]


def test_network_policy_says_what_it_does_not_block():
    text = (ROOT / "base/networkpolicy.yaml").read_text()
    assert "NOT blocked: the Kubernetes API server" in text
    assert "overlays/prod-cilium" in text


def test_the_cilium_option_denies_the_api_server_and_allows_egress_by_name_only():
    prod, cilium = render("overlays/prod"), render("overlays/prod-cilium")
    policy = find(cilium, "CiliumNetworkPolicy", "local-code-interpreter-egress")
    assert policy["metadata"]["namespace"] == "lci-prod"
    spec = policy["spec"]
    assert spec["endpointSelector"] == find(prod, "Deployment")["spec"]["selector"]
    assert spec["egressDeny"] == [{"toEntities": ["kube-apiserver"]}]
    dns, https = spec["egress"]
    assert dns["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"] == "kube-dns"
    assert dns["toPorts"][0]["ports"] == [{"port": "53", "protocol": "ANY"}]
    names = {n.get("matchName") or n.get("matchPattern") for n in https["toFQDNs"]}
    assert names == {"*.openai.azure.com", "*.cognitiveservices.azure.com", "login.microsoftonline.com"}
    assert names == {n.get("matchName") or n.get("matchPattern") for n in dns["toPorts"][0]["rules"]["dns"]}
    assert https["toPorts"] == [{"ports": [{"port": "443", "protocol": "TCP"}]}]
    assert all(set(rule) <= {"toEndpoints", "toFQDNs", "toPorts"} for rule in spec["egress"]), \
        "no CIDR or entity allow that would re-open egress"
    # Cilium ORs the policies' allows: the NetworkPolicy must not keep its "any public 443" egress.
    network_policy = find(cilium, "NetworkPolicy")["spec"]
    assert network_policy["policyTypes"] == ["Ingress"] and "egress" not in network_policy
    assert network_policy["ingress"] == find(prod, "NetworkPolicy")["spec"]["ingress"]
    # Everything else is prod, unchanged.
    rest = lambda objects: sorted(  # noqa: E731
        (yaml.safe_dump(o) for o in objects if o["kind"] not in ("NetworkPolicy", "CiliumNetworkPolicy")))
    assert rest(cilium) == rest(prod)


def _sops_recipient() -> str:
    (rule,) = yaml.safe_load((ROOT / ".sops.yaml").read_text())["creation_rules"]
    return rule["age"]


def test_the_devui_token_is_a_sops_secret_that_flux_decrypts_for_the_deployment():
    prod = render("overlays/prod")
    env = {e["name"]: e for e in app_container(prod)["env"]}
    ref = env["DEVUI_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = find(prod, "Secret", ref["name"])
    assert ref["key"] in secret["stringData"] and secret["stringData"][ref["key"]].startswith("ENC[AES256_GCM")
    assert [r["recipient"] for r in secret["sops"]["age"]] == [_sops_recipient()]
    assert secret["sops"].get("mac_only_encrypted") is True, "kustomize changes names, labels, namespaces"
    apps = yaml.safe_load((ROOT / "clusters/aks-prod/apps.yaml").read_text())
    assert apps["spec"]["decryption"] == {"provider": "sops", "secretRef": {"name": "sops-age"}}


def test_flux_alerts_on_failures_and_reconciles_on_push():
    objects = render("infrastructure/flux-notifications")
    by_kind = {o["kind"]: o for o in objects}
    assert all(o["metadata"]["namespace"] == "flux-system" for o in objects)
    provider, alert, receiver = by_kind["Provider"], by_kind["Alert"], by_kind["Receiver"]
    assert provider["spec"]["type"] == "generic" and provider["spec"]["address"].startswith("https://")
    assert alert["spec"]["providerRef"]["name"] == provider["metadata"]["name"]
    assert alert["spec"]["eventSeverity"] == "error"
    assert {s["kind"] for s in alert["spec"]["eventSources"]} == {"Kustomization", "GitRepository"}
    assert all(s["name"] == "*" for s in alert["spec"]["eventSources"])
    assert receiver["spec"]["events"] == ["push"]
    assert receiver["spec"]["resources"] == [
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "flux-system"}]
    token = find(objects, "Secret", receiver["spec"]["secretRef"]["name"])
    assert token["stringData"]["token"].startswith("ENC[") and "sops" in token
    webhook = by_kind["Ingress"]
    assert webhook["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "webhook-receiver"
    # Applied by their own Flux Kustomization, which decrypts the token; the app does not depend on it.
    flux = yaml.safe_load((ROOT / "clusters/aks-prod/notifications.yaml").read_text())
    assert flux["spec"]["path"] == "./infrastructure/flux-notifications"
    assert flux["spec"]["decryption"] == {"provider": "sops", "secretRef": {"name": "sops-age"}}
    apps = yaml.safe_load((ROOT / "clusters/aks-prod/apps.yaml").read_text())
    assert {"name": flux["metadata"]["name"]} not in apps["spec"].get("dependsOn", [])
