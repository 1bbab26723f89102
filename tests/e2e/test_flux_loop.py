"""Commit-to-deploy through Flux, for real, on loopback (issue 7).

Flux's source- and kustomize-controller reconcile clusters/aks-prod, through clusters/loopback (see gitops.py),
from a clone of this repository served over git smart HTTP, into a real kube-apiserver with fake kwok nodes.
The tests run in order: each commit goes to the temporary clone, never to this repository's history.
"""
import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from controlplane import FAKE_NODE_ANNOTATION, wait_until
from gitops import CLUSTER, LOOPBACK, PROD, ROOT, GitOpsRepo, encrypt_secrets_for_this_cluster, just
from gitserver import GitHTTPServer

pytestmark = pytest.mark.slow

OVERLAYS = ("overlays/dev", "overlays/prod")
# A commit is picked up within the GitRepository's interval; this is the allowance for the rest of the loop
# (fetch, build, apply, rollout on the fake nodes, health checks).
APPLY_ALLOWANCE = 120
TIMINGS = ROOT / "test-artifacts" / "flux-loop.json"


def _seconds(duration: str) -> float:
    """A Go duration such as 1m0s or 10m as seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(value) * units[unit] for value, unit in re.findall(r"([\d.]+)([hms])", duration))


def _condition(obj: dict, kind: str = "Ready") -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _assert_subset(expected, live, path: str = "") -> None:
    """Every field set in expected is set in live to the same value (the API server adds defaults)."""
    if isinstance(expected, dict):
        assert isinstance(live, dict), f"{path}: expected a mapping, live has {live!r}"
        for key, value in expected.items():
            assert key in live, f"{path}.{key}: missing in the live object"
            _assert_subset(value, live[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(live, list) and len(live) == len(expected), f"{path}: {expected!r} != {live!r}"
        for index, (want, got) in enumerate(zip(expected, live)):
            _assert_subset(want, got, f"{path}[{index}]")
    else:
        assert expected == live, f"{path}: expected {expected!r}, live has {live!r}"


class Flux:
    """The GitOps loop under test: the control plane, the served clone, and the Flux objects that tie them."""

    def __init__(self, plane, repo: GitOpsRepo):
        self.plane, self.repo = plane, repo
        kustomizations = [doc for doc in repo.render(LOOPBACK, "LoadRestrictionsNone")
                          if doc["kind"] == "Kustomization"]
        self.app = next(doc["metadata"]["name"] for doc in kustomizations
                        if doc["spec"]["path"].strip("./") == PROD)
        self.poll_interval = _seconds(repo.sync["GitRepository"]["spec"]["interval"])

    def kustomization(self, name: str) -> dict:
        return self.plane.get("kustomizations.kustomize.toolkit.fluxcd.io", name, "flux-system")

    def describe(self) -> str:
        """Each Flux object's Ready condition and the controllers' last log lines: what a time-out shows."""
        result = self.plane.kubectl("get", "gitrepositories,kustomizations", "--all-namespaces", "--output=json")
        lines = [f"{item['kind']}/{item['metadata']['name']}: Ready={_condition(item).get('status')} "
                 f"{_condition(item).get('message', '')}" for item in json.loads(result.stdout)["items"]]
        for name in ("source-controller", "kustomize-controller"):
            lines += [f"--- {name} log", self.plane.log_tail(name, 15)]
        return "\n".join(lines)

    def wait(self, check, timeout: float, what: str):
        try:
            return wait_until(check, timeout, what, interval=1)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None

    def wait_applied(self, name: str, sha: str, timeout: float) -> dict:
        """Wait until the Kustomization name is Ready with commit sha applied."""
        def applied():
            obj = self.kustomization(name)
            ready = obj and _condition(obj).get("status") == "True"
            return obj if ready and sha in obj["status"].get("lastAppliedRevision", "") else None
        return self.wait(applied, timeout, f"Kustomization {name} applies {sha[:8]}")

    def request_fetch(self) -> None:
        """Ask source-controller to fetch now, as a webhook receiver would, instead of after its interval."""
        self.plane.kubectl("annotate", "--overwrite", "gitrepository", "flux-system", "--namespace=flux-system",
                           f"reconcile.fluxcd.io/requestedAt={time.time()}")

    def deployment(self) -> dict:
        app = next(doc for doc in self.repo.render(PROD) if doc["kind"] == "Deployment")
        return self.plane.get("deployment", app["metadata"]["name"], app["metadata"]["namespace"])

    def set_prod_tag(self, tag: str) -> str:
        """Change the prod image tag in the working clone; return the image the Deployment should then run."""
        kustomization = self.repo.read_yaml(f"{PROD}/kustomization.yaml")
        image = kustomization["images"][0]
        image["newTag"] = tag
        self.repo.write_yaml(f"{PROD}/kustomization.yaml", kustomization)
        return f"{image.get('newName', image['name'])}:{tag}"


def _record_timing(name: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    timings[name] = round(seconds, 1)
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"{name}: {seconds:.1f}s")


def _add_fake_nodes(plane, prod: list[dict]) -> None:
    """kwok nodes that the prod pods fit on: the Deployment's node labels and extended resources, one node per
    replica plus one for the rolling update's surge pod."""
    deployment = next(doc for doc in prod if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    extended = {name: "1" for container in pod["containers"]
                for name in container.get("resources", {}).get("limits", {}) if "/" in name}
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi", **extended}
    for index in range(deployment["spec"].get("replicas", 1) + 1):
        name = f"e2e-node-{index}"
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "topology.kubernetes.io/zone": f"zone-{index % 3}", **pod.get("nodeSelector", {})}
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels, "annotations": {FAKE_NODE_ANNOTATION: "fake"}},
                "status": {"capacity": resources, "allocatable": resources}}
        plane.kubectl("create", "-f", "-", input=json.dumps(node))


DEVUI_TOKEN = "e2e-devui-token-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def flux(control_plane, tmp_path_factory):
    if not (ROOT / CLUSTER).is_dir():
        pytest.skip(f"{CLUSTER} does not exist in this checkout")
    workdir = tmp_path_factory.mktemp("gitops")
    (workdir / "served").mkdir()
    repo = GitOpsRepo(workdir, workdir / "served")
    with GitHTTPServer(workdir / "served") as server:
        repo.write_loopback_cluster(server.url(repo.served.name))
        encrypt_secrets_for_this_cluster(repo, control_plane, workdir, DEVUI_TOKEN)
        repo.commit("e2e: clusters/loopback applies clusters/aks-prod from the loopback source; secrets for its key")
        _add_fake_nodes(control_plane, repo.render(PROD))
        # The bootstrap, as `flux bootstrap` does it: apply the sync objects once, then Flux manages itself.
        bootstrap = repo.render(LOOPBACK, "LoadRestrictionsNone")
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(bootstrap))
        yield Flux(control_plane, repo)


def test_flux_reconciles_the_prod_overlay(flux):
    started = time.monotonic()
    head = flux.repo.git("rev-parse", "HEAD")
    flux.wait_applied(flux.app, head, 5 * 60)
    _record_timing("bootstrap_to_app_ready_s", time.monotonic() - started)

    expected = flux.repo.render(PROD)
    for obj in expected:
        meta = obj["metadata"]
        live = flux.plane.get(obj["kind"], meta["name"], meta.get("namespace"))
        assert live, f"{obj['kind']}/{meta['name']} was not applied"
        # A SOPS Secret is applied decrypted (test_flux_decrypts_the_devui_token_for_the_app checks its value).
        skipped = {"metadata", "sops", "stringData", "data"} if "sops" in obj else {"metadata"}
        _assert_subset({key: value for key, value in obj.items() if key not in skipped},
                       live, f"{obj['kind']}/{meta['name']}")
        _assert_subset({key: meta[key] for key in ("labels", "annotations") if key in meta},
                       live["metadata"], f"{obj['kind']}/{meta['name']}.metadata")

    by_kind = {obj["kind"]: obj for obj in expected}
    assert {"Namespace", "ConfigMap", "ServiceAccount", "Deployment", "Service"} <= set(by_kind)
    service_account = flux.plane.get("serviceaccount", by_kind["ServiceAccount"]["metadata"]["name"],
                                     by_kind["ServiceAccount"]["metadata"]["namespace"])
    assert service_account["metadata"]["annotations"].get("azure.workload.identity/client-id")
    image = flux.repo.read_yaml(f"{PROD}/kustomization.yaml")["images"][0]
    deployment = flux.deployment()
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{image.get('newName', image['name'])}:{image['newTag']}"
    # `wait: true` made Ready mean the rollout finished: every replica runs (on the fake nodes) and is ready.
    assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"]


def test_flux_decrypts_the_devui_token_for_the_app(flux):
    """kustomize-controller decrypted the SOPS Secret with flux-system/sops-age: the pod's token is the one the
    recipe encrypted, and nothing encrypted reached the cluster."""
    sops_age = flux.plane.get("secret", "sops-age", "flux-system")
    assert sops_age and "age.agekey" in sops_age["data"]
    secret = next(doc for doc in flux.repo.render(PROD) if doc["kind"] == "Secret")
    live = flux.plane.get("secret", secret["metadata"]["name"], secret["metadata"]["namespace"])
    assert live, "the DevUI token Secret was not applied"
    assert base64.b64decode(live["data"]["token"]).decode() == DEVUI_TOKEN
    assert "sops" not in live and "ENC[" not in json.dumps(live)
    env = {e["name"]: e for e in flux.deployment()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DEVUI_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": live["metadata"]["name"], "key": "token"}


def test_flux_notifications_are_applied_with_the_receiver_token(flux):
    """The flux-notifications Kustomization applies the Provider, Alert and Receiver (validated by the API server
    against the notification CRDs) and the decrypted receiver token. notification-controller itself does not run
    here (its module is not served by the Go proxy), so the objects are stored, not acted on."""
    name = "flux-notifications"
    flux.wait(lambda: _condition(flux.kustomization(name)).get("status") == "True", 3 * 60,
              f"Kustomization {name} Ready")
    for kind, obj in (("providers.notification.toolkit.fluxcd.io", "webhook"),
                      ("alerts.notification.toolkit.fluxcd.io", "reconciliation-failures"),
                      ("receivers.notification.toolkit.fluxcd.io", "github-push"),
                      ("ingress", "flux-webhook")):
        assert flux.plane.get(kind, obj, "flux-system"), f"{kind}/{obj} was not applied"
    token = flux.plane.get("secret", "flux-receiver-token", "flux-system")
    assert len(base64.b64decode(token["data"]["token"])) == 64  # 32 random bytes, hex


def test_a_commit_changing_the_prod_image_tag_is_applied(flux):
    want = flux.set_prod_tag("0.1.1-e2e")
    committed = time.monotonic()
    sha = flux.repo.commit("e2e: bump the prod image tag")
    bound = flux.poll_interval + APPLY_ALLOWANCE
    flux.wait(lambda: flux.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == want,
              bound, f"Deployment runs {want}")
    _record_timing("commit_to_applied_s", time.monotonic() - committed)
    flux.wait_applied(flux.app, sha, bound)
    _record_timing("commit_to_rolled_out_s", time.monotonic() - committed)


def test_a_resource_removed_from_git_is_pruned(flux):
    kustomization = flux.repo.read_yaml(f"{PROD}/kustomization.yaml")
    removed = next(entry for entry in reversed(kustomization["resources"]) if entry.endswith((".yaml", ".yml")))
    obj = yaml.safe_load((flux.repo.work / PROD / removed).read_text())
    kustomization["resources"].remove(removed)
    flux.repo.write_yaml(f"{PROD}/kustomization.yaml", kustomization)
    sha = flux.repo.commit(f"e2e: remove {removed} from the prod overlay")
    flux.request_fetch()
    flux.wait_applied(flux.app, sha, APPLY_ALLOWANCE)
    meta = obj["metadata"]
    assert flux.plane.get(obj["kind"], meta["name"], meta.get("namespace")) is None, \
        f"{obj['kind']}/{meta['name']} was removed from git but not pruned"
    assert flux.deployment(), "pruning took the Deployment too"


def test_a_broken_commit_fails_without_touching_the_running_objects_and_the_next_commit_recovers(flux):
    running = flux.deployment()
    running_image = running["spec"]["template"]["spec"]["containers"][0]["image"]
    want = flux.set_prod_tag("0.1.2-e2e")
    kustomization = flux.repo.read_yaml(f"{PROD}/kustomization.yaml")
    kustomization["resources"].append("e2e-broken.yaml")
    flux.repo.write_yaml(f"{PROD}/kustomization.yaml", kustomization)
    namespace = running["metadata"]["namespace"]
    # Invalid: a ConfigMap's data values are strings.
    flux.repo.write_yaml(f"{PROD}/e2e-broken.yaml", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "e2e-broken", "namespace": namespace}, "data": {"values": [1, 2]}})
    broken = flux.repo.commit("e2e: an invalid manifest, together with a new image tag")
    flux.request_fetch()

    def failed():
        obj = flux.kustomization(flux.app)
        attempted = broken in obj.get("status", {}).get("lastAttemptedRevision", "")
        return obj if attempted and _condition(obj).get("status") == "False" else None
    obj = flux.wait(failed, APPLY_ALLOWANCE, f"Kustomization {flux.app} fails on {broken[:8]}")
    assert "e2e-broken" in _condition(obj)["message"], _condition(obj)
    assert broken not in obj["status"].get("lastAppliedRevision", "")
    after = flux.deployment()
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == running_image
    assert after["metadata"]["generation"] == running["metadata"]["generation"]
    assert flux.plane.get("configmap", "e2e-broken", namespace) is None

    (flux.repo.work / PROD / "e2e-broken.yaml").unlink()
    kustomization["resources"].remove("e2e-broken.yaml")
    flux.repo.write_yaml(f"{PROD}/kustomization.yaml", kustomization)
    fixed = flux.repo.commit("e2e: drop the invalid manifest")
    flux.request_fetch()
    flux.wait_applied(flux.app, fixed, APPLY_ALLOWANCE)
    assert flux.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == want


def test_the_dev_token_recipe_works_on_a_fresh_namespace_and_is_idempotent(flux, tmp_path):
    """`just ENV=dev k8s-auth-secret` for real against the API server: it creates lci-dev if missing, then the
    Secret; a second run keeps the token; ROTATE=1 replaces it."""
    key = tmp_path / "unused.agekey"
    token = tmp_path / "token"
    token.write_text("dev-token-" + os.urandom(6).hex())
    read = lambda: base64.b64decode(  # noqa: E731
        flux.plane.get("secret", "local-code-interpreter-auth", "lci-dev")["data"]["token"]).decode()
    just(flux.repo, flux.plane, key, "ENV=dev", "k8s-auth-secret", env={"SECRET_VALUE_FILE": str(token)})
    assert read() == token.read_text()
    out = just(flux.repo, flux.plane, key, "ENV=dev", "k8s-auth-secret")
    assert "kept the Secret lci-dev/local-code-interpreter-auth" in out and read() == token.read_text()
    just(flux.repo, flux.plane, key, "ENV=dev", "k8s-auth-secret", env={"ROTATE": "1"})
    rotated = read()
    assert rotated != token.read_text() and len(rotated) == 64


@pytest.mark.parametrize("overlay", (*OVERLAYS, "overlays/prod-cilium", "infrastructure/flux-notifications"))
def test_the_overlay_passes_a_server_side_dry_run(flux, overlay):
    """The real files of this checkout, not the clone the tests changed, as kustomize-controller would apply them:
    SOPS Secrets decrypted (here: masked, as `flux build` shows them); the CiliumNetworkPolicy against Cilium's
    CRD."""
    rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / overlay)], capture_output=True, text=True,
                              check=True).stdout
    masked = subprocess.run([sys.executable, str(ROOT / "scripts" / "mask-sops.py")], input=rendered,
                            capture_output=True, text=True, check=True).stdout
    # A dry run cannot create the namespace its objects go in: create the overlay's Namespace for real first.
    namespaces = [doc for doc in yaml.safe_load_all(masked) if doc and doc["kind"] == "Namespace"]
    if namespaces:
        flux.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(namespaces))
    result = flux.plane.kubectl("apply", "--dry-run=server", "-f", "-", input=masked, check=False)
    assert result.returncode == 0, result.stderr
