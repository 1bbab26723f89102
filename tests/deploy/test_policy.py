"""Policy checks over the rendered manifests: the pod spec the plan asks for, what each overlay may change,
no plain-text secrets, and what production needs."""

import copy

import pytest
import yaml

from conftest import OVERLAYS, ROOT, app_container, find, pod_spec, render

WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
WEBHOOK_ENV = {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_spec_has_the_planned_hardening(overlay):
    objects = render(f"overlays/{overlay}")
    spec = pod_spec(objects)
    assert spec["serviceAccountName"] == "local-code-interpreter"
    # No Kubernetes API token in a pod that runs model-written code; workload identity projects its own token.
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "fsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = app_container(objects)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    # Liveness stays cheap (/health); readiness and startup ask whether the configured sandbox can run code.
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "the self-check needs time to start"
    for bound in ("requests", "limits"):
        assert {"cpu", "memory", "ephemeral-storage"} <= container["resources"][bound].keys()
    assert container["envFrom"] == [{"configMapRef": {"name": "local-code-interpreter"}}]
    assert container["env"] == [
        {
            "name": "DEVUI_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "local-code-interpreter-auth", "key": "token"}},
        },
        {
            "name": "LCI_DISK_BUDGET_MB",
            "valueFrom": {"resourceFieldRef": {"containerName": container["name"],
                                               "resource": "limits.ephemeral-storage", "divisor": "1Mi"}},
        },
    ]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": container["resources"]["limits"]
                                                                         ["ephemeral-storage"]}}]
    template_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert template_labels[WORKLOAD_IDENTITY_LABEL] == "true"


def _mebibytes(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_starts_with_settings_whose_quotas_all_fit_its_disk_limit(overlay, monkeypatch):
    """What each overlay's pod starts with: its ConfigMap, the disk budget the downward API gives it (the
    ephemeral-storage limit, in MiB) and sessions sized to its memory limit. Every session and execution at its
    disk quota, plus the reserve, fits the limit past which the kubelet would evict the pod, without lowering the
    sessions' default quota. (The first version of this Deployment let one session's legitimate 300 MB get the
    whole pod evicted: /tmp was 256 MiB, three sessions had 512 MiB each.) With the defaults: 3 x 512 + 4 x 64 +
    264 (request bodies in flight) + 64 (logs) = 2120 MiB."""
    from local_code_interpreter import sessions
    from local_code_interpreter.settings import LOG_RESERVE_MB, MIB, load

    objects = render(f"overlays/{overlay}")
    container = app_container(objects)
    limits = container["resources"]["limits"]
    budget = _mebibytes(limits["ephemeral-storage"])
    monkeypatch.setattr(sessions, "memory_budget_mb", lambda: _mebibytes(limits["memory"]))
    settings = load({}, {**find(objects, "ConfigMap")["data"], "LCI_DISK_BUDGET_MB": str(budget)})
    used = (settings.sessions.max_sessions * settings.sessions.disk_mb
            + settings.max_concurrency * settings.limits.scratch_mb
            + settings.bodies_in_flight_bytes / MIB + LOG_RESERVE_MB)  # uploads being received are spooled to /tmp
    assert settings.disk_budget_mb == budget and used <= budget
    assert settings.sessions.disk_mb == 512 and settings.sessions.max_sessions >= 3
    assert _mebibytes(pod_spec(objects)["volumes"][0]["emptyDir"]["sizeLimit"]) <= budget


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_the_settings_but_no_identity_or_secret(overlay):
    objects = render(f"overlays/{overlay}")
    data = find(objects, "ConfigMap")["data"]
    assert data["AZURE_OPENAI_ENDPOINT"].startswith("https://")
    assert data["AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME"]
    assert (data["LCI_HOST"], data["LCI_PORT"]) == ("0.0.0.0", "8090")
    assert data["LCI_DEVUI_MODE"] == {"dev": "developer", "prod": "user"}[overlay]
    assert data["LCI_SANDBOX"] == {"dev": "subprocess", "prod": "hyperlight"}[overlay]
    assert not WEBHOOK_ENV & data.keys(), "the workload identity webhook injects these"
    assert "DEVUI_AUTH_TOKEN" not in data
    rendered = yaml.safe_dump_all(objects)
    assert "azure-identity-token" not in rendered, "the token path comes from AZURE_FEDERATED_TOKEN_FILE"


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_workload_identity_label_only_on_the_pod_template(target):
    for obj in render(target):
        spec = obj.get("spec", {})
        selector = spec.get("selector", {})
        selector = selector.get("matchLabels", {}) if "matchLabels" in selector else selector
        assert WORKLOAD_IDENTITY_LABEL not in selector, f"{obj['kind']} selects on {WORKLOAD_IDENTITY_LABEL}"
        assert WORKLOAD_IDENTITY_LABEL not in obj["metadata"].get("labels", {})


def test_namespace_enforces_restricted_pod_security():
    labels = find(render("base"), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _drop(node, keys):
    """Remove the entry at the key path; a list on the way applies the rest of the path to each item."""
    if isinstance(node, list):
        for item in node:
            _drop(item, keys)
    elif isinstance(node, dict) and keys[0] in node:
        if len(keys) == 1:
            del node[keys[0]]
        else:
            _drop(node[keys[0]], keys[1:])


def _without(objects, *paths):
    """Deep copies of the objects without the (kind, key, key...) entries and with their namespace (which each
    overlay sets) blanked: what is left must be unchanged."""
    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = "<namespace>"
        elif "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = "<namespace>"
    for kind, *keys in paths:
        _drop([o for o in objects if o["kind"] == kind], keys)
    return objects


OVERLAY_CHANGES = [
    ("ServiceAccount", "metadata", "annotations"),
    ("ConfigMap", "data", "AZURE_OPENAI_ENDPOINT"),
    ("Deployment", "spec", "replicas"),
    ("Deployment", "spec", "template", "spec", "containers", "image"),
]


def test_dev_differs_from_base_only_in_identity_endpoint_image_replicas_and_no_hypervisor():
    base, dev = render("base"), render("overlays/dev")
    removed = [
        ("ConfigMap", "data", "LCI_SANDBOX"),
        ("ConfigMap", "data", "LCI_HYPERLIGHT"),
        ("Deployment", "spec", "template", "spec", "nodeSelector"),
        ("Deployment", "spec", "template", "spec", "containers", "resources", "limits", "hyperlight.dev/hypervisor"),
    ]
    assert _without(dev, *OVERLAY_CHANGES, *removed) == _without(base, *OVERLAY_CHANGES, *removed)
    assert "hyperlight.dev/hypervisor" not in app_container(dev)["resources"]["limits"]
    assert "nodeSelector" not in pod_spec(dev)
    assert find(dev, "Deployment")["spec"]["replicas"] == 1


def test_prod_differs_from_base_only_in_what_production_adds():
    base, prod = render("base"), render("overlays/prod")
    added = [
        ("ConfigMap", "data", "LCI_DEVUI_MODE"),
        ("Deployment", "spec", "template", "spec", "topologySpreadConstraints"),
    ]
    extra = [o for o in prod if o["kind"] in ("PodDisruptionBudget", "Ingress", "Secret")]
    assert _without([o for o in prod if o not in extra], *OVERLAY_CHANGES, *added) == _without(
        base, *OVERLAY_CHANGES, *added
    )
    assert app_container(prod)["resources"]["limits"]["hyperlight.dev/hypervisor"] == "1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_set_their_own_identity_and_endpoint(overlay):
    objects, base = render(f"overlays/{overlay}"), render("base")
    client_id = find(objects, "ServiceAccount")["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert client_id != find(base, "ServiceAccount")["metadata"]["annotations"]["azure.workload.identity/client-id"]
    endpoint = find(objects, "ConfigMap")["data"]["AZURE_OPENAI_ENDPOINT"]
    assert endpoint != find(base, "ConfigMap")["data"]["AZURE_OPENAI_ENDPOINT"]
    assert app_container(objects)["image"].startswith("registry.example/local-code-interpreter:")


def test_prod_has_an_immutable_tag_disruption_budget_spread_and_affinity():
    prod = render("overlays/prod")
    image = app_container(prod)["image"]
    tag = image.rsplit(":", 1)[1]
    assert tag not in ("latest", "dev", "") and "@" not in tag
    assert find(prod, "Deployment")["spec"]["replicas"] >= 2
    pdb = find(prod, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == find(prod, "Deployment")["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1
    spread = {c["topologyKey"]: c for c in pod_spec(prod)["topologySpreadConstraints"]}
    assert spread.keys() == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # Nodes: a hard limit (maxSkew 1, DoNotSchedule); zones: a preference only (ScheduleAnyway), as commented.
    assert (spread["kubernetes.io/hostname"]["maxSkew"], spread["kubernetes.io/hostname"]["whenUnsatisfiable"]) == (
        1, "DoNotSchedule")
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    comment = (ROOT / "overlays/prod/topology-spread.yaml").read_text()
    assert "differs by at most" in comment and "preference only" in comment
    # Behind the ingress, the Service sees only nginx's pods: ClientIP affinity would pin nothing per user.
    assert find(prod, "Service")["spec"].get("sessionAffinity", "None") == "None"


def test_prod_ingress_lets_through_every_body_the_app_accepts():
    """nginx refuses a body past `proxy-body-size` with its own HTML 413, before the app can say which limit and
    why: it must pass the largest body the app takes (an upload at LCI_MAX_UPLOAD_MB to the sessions API or the
    Containers API, with its multipart framing), so the app's own limits, and its JSON errors, are the ones a
    client meets."""
    from local_code_interpreter.http.aca import MULTIPART_SLACK
    from local_code_interpreter.settings import load

    prod = render("overlays/prod")
    settings = load({}, dict(find(prod, "ConfigMap")["data"]))
    largest = max(settings.serving.max_body_bytes, settings.sessions.max_upload_mb * 1024 * 1024 + MULTIPART_SLACK)
    size = find(prod, "Ingress")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}
    assert int(size[:-1]) * units[size[-1].lower()] >= largest, (size, largest)


def test_prod_network_policy_allows_only_ingress_to_8090_dns_and_public_https():
    policy = find(render("overlays/prod"), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "local-code-interpreter"}
    assert [p for rule in policy["ingress"] for p in rule["ports"]] == [{"protocol": "TCP", "port": 8090}]
    assert all(rule.get("from") for rule in policy["ingress"]), "ingress must name its sources"
    egress_ports = sorted((p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"])
    assert egress_ports == [("TCP", 53), ("TCP", 443), ("UDP", 53)]
    (https,) = [rule for rule in policy["egress"] if rule["ports"][0]["port"] == 443]
    (block,) = [peer["ipBlock"] for peer in https["to"]]
    for unreachable in ("169.254.0.0/16", "168.63.129.16/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert unreachable in block["except"]


def _assert_sops_encrypted(doc: dict, where: str) -> None:
    assert "sops" in doc, f"{where} holds a Secret that is not SOPS-encrypted"
    assert doc["sops"]["mac"].startswith("ENC["), where
    values = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
    assert values and all(str(v).startswith("ENC[") for v in values.values()), f"{where}: a value is in plain text"


def test_no_secret_is_committed_in_plain_text():
    found = 0
    for path in ROOT.glob("**/*.y*ml"):
        if any(part in (".venv", ".git", "node_modules", "test-artifacts") for part in path.parts):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                _assert_sops_encrypted(doc, str(path.relative_to(ROOT)))
                found += 1
    assert found >= 2, "the DevUI token and the Flux receiver token are committed, encrypted"
    for target in ("base", "overlays/dev", "overlays/prod", "infrastructure/flux-notifications"):
        for obj in render(target):
            if obj["kind"] == "Secret":
                _assert_sops_encrypted(obj, f"{target} renders Secret {obj['metadata']['name']}")


def test_device_plugin_hands_the_device_to_the_pod_user():
    objects = render("infrastructure/hyperlight-device-plugin")
    container = find(objects, "DaemonSet", "hyperlight-device-plugin")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    prod_security = pod_spec(render("overlays/prod"))["securityContext"]
    assert env["DEVICE_UID"] == str(prod_security["runAsUser"]) == "65534"
    assert env["DEVICE_GID"] == str(prod_security["runAsGroup"]) == "65534"
    namespace = find(objects, "Namespace", "hyperlight-device-plugin")
    daemonset = find(objects, "DaemonSet", "hyperlight-device-plugin")
    assert daemonset["metadata"]["namespace"] == namespace["metadata"]["name"]


def test_flux_app_kustomization_follows_the_conventions():
    apps = yaml.safe_load((ROOT / "clusters/aks-prod/apps.yaml").read_text())
    assert apps["metadata"] == {"name": "local-code-interpreter", "namespace": "flux-system"}
    spec = apps["spec"]
    assert spec["path"] == "./overlays/prod"
    assert spec["dependsOn"] == [{"name": "infrastructure"}]
    assert spec["prune"] is True and spec["wait"] is True and spec["timeout"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
    assert spec["decryption"] == {"provider": "sops", "secretRef": {"name": "sops-age"}}
    infra = yaml.safe_load((ROOT / "clusters/aks-prod/infrastructure.yaml").read_text())
    assert infra["metadata"]["name"] == "infrastructure"
    assert (ROOT / infra["spec"]["path"]).is_dir()


def test_sourceignore_keeps_only_the_deployment_folders():
    lines = [l for l in (ROOT / ".sourceignore").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[0] == "/*"
    assert sorted(lines[1:]) == ["!/base/", "!/clusters/", "!/components/", "!/infrastructure/", "!/overlays/"]
    assert all((ROOT / line[2:]).is_dir() for line in lines[1:])


def test_nothing_hard_codes_the_federated_token_path_or_uses_an_api_key():
    token_path = "/var/run/secrets/azure/tokens"  # where the webhook projects the token today; may change
    for folder in ("src", "base", "overlays", "infrastructure", "clusters"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml", ".yml"):
                text = path.read_text()
                assert token_path not in text, f"{path.relative_to(ROOT)}: read AZURE_FEDERATED_TOKEN_FILE instead"
                if folder != "src":
                    assert "AZURE_OPENAI_API_KEY" not in text, f"{path.relative_to(ROOT)}: the pod uses its identity"
