"""The infrastructure Kustomization is Ready only when a node offers hyperlight.dev/hypervisor (issue 15), for
real: Flux's source- and kustomize-controller reconcile clusters/aks-prod (through clusters/loopback, see
gitops.py) into a real kube-apiserver, controller-manager and scheduler, on fake kwok nodes.

The story a platform engineer lives through, in order, on one cluster:
1. no Hyperlight node: the DaemonSet "rolls out" to zero nodes, yet infrastructure is not Ready (its health
   check names the DaemonSet and the hypervisor-check Job) and the app is not applied;
2. a node labelled as upstream's AKS scripts label Hyperlight pools joins, the plugin's pod runs there, but the
   node does not offer the resource yet (the plugin has not registered): still not Ready, now only the Job waits;
3. the node offers hyperlight.dev/hypervisor (what the kubelet does once the plugin registers): the Job is
   scheduled there and completes, infrastructure becomes Ready by itself, and the app is applied.

Only the clone's timeout and retryInterval of the infrastructure Kustomization are shortened (20s, 10s), so that
each failed health check is seen in seconds instead of minutes; the checks themselves are the committed ones.
"""
import json
import os

import pytest
import yaml

from controlplane import FAKE_NODE_ANNOTATION, ControlPlane, missing_tools, wait_until
from gitops import CLUSTER, LOOPBACK, ROOT, GitOpsRepo, encrypt_secrets_for_this_cluster
from gitserver import GitHTTPServer

pytestmark = pytest.mark.slow

INFRA = "infrastructure"
NAMESPACE = "hyperlight-device-plugin"
RESOURCE = "hyperlight.dev/hypervisor"
STEP_TIMEOUT = 150


def _condition(obj: dict | None, kind: str = "Ready") -> dict:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _node(name: str, labels: dict, extended: dict | None = None) -> dict:
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi", **(extended or {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", **labels}},
            "status": {"capacity": resources, "allocatable": resources}}


class Cluster:
    def __init__(self, plane: ControlPlane, repo: GitOpsRepo):
        self.plane, self.repo = plane, repo
        kustomizations = [d for d in repo.render(LOOPBACK, "LoadRestrictionsNone") if d["kind"] == "Kustomization"]
        self.app = next(d["metadata"]["name"] for d in kustomizations if d["spec"].get("dependsOn"))
        self.app_objects = repo.render(
            next(d["spec"]["path"] for d in kustomizations if d["metadata"]["name"] == self.app).strip("./"))

    def kustomization(self, name: str) -> dict | None:
        return self.plane.get("kustomizations.kustomize.toolkit.fluxcd.io", name, "flux-system")

    def describe(self) -> str:
        lines = []
        for name in (INFRA, self.app):
            ready = _condition(self.kustomization(name))
            lines.append(f"Kustomization/{name}: {ready.get('status')} {ready.get('reason')}: {ready.get('message')}")
        lines.append(self.plane.kubectl("get", "nodes,daemonsets,jobs,pods", "-A", "-o", "wide", check=False).stdout)
        lines += ["--- kustomize-controller", self.plane.log_tail("kustomize-controller", 15)]
        return "\n".join(lines)

    def wait(self, check, what: str, timeout: float = STEP_TIMEOUT):
        try:
            return wait_until(check, timeout, what, interval=1)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None

    def infra_not_ready_because_of(self, *waiting: str, not_waiting: tuple[str, ...] = ()) -> dict:
        """Wait for a failed health check of infrastructure whose message names each of waiting, none of
        not_waiting; return the Ready condition."""
        def failed():
            ready = _condition(self.kustomization(INFRA))
            message = ready.get("message", "")
            if ready.get("status") == "False" and all(w in message for w in waiting) \
                    and not any(w in message for w in not_waiting):
                return ready
            return None
        return self.wait(failed, f"infrastructure not Ready, waiting for {waiting}")

    def app_deployment(self) -> dict | None:
        deployment = next(o for o in self.app_objects if o["kind"] == "Deployment")
        return self.plane.get("deployment", deployment["metadata"]["name"], deployment["metadata"]["namespace"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        reason = "control plane not built (run: bash scripts/tools/controlplane.sh); missing: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: the tools did not install: {reason}")
        pytest.skip(reason)
    if not (ROOT / CLUSTER / "infrastructure.yaml").exists():
        pytest.skip(f"{CLUSTER}/infrastructure.yaml does not exist in this checkout")
    workdir = tmp_path_factory.mktemp("infra-readiness")
    (workdir / "served").mkdir()
    with ControlPlane(workdir / "plane") as plane:
        repo = GitOpsRepo(workdir, workdir / "served")
        with GitHTTPServer(workdir / "served") as server:
            infra = repo.read_yaml(f"{CLUSTER}/infrastructure.yaml")
            infra["spec"].update(timeout="20s", retryInterval="10s")
            repo.write_yaml(f"{CLUSTER}/infrastructure.yaml", infra)
            repo.write_loopback_cluster(server.url(repo.served.name))
            # The app's Kustomization decrypts its SOPS Secrets: the cluster's age key, as the README's recipes do.
            encrypt_secrets_for_this_cluster(repo, plane, workdir, "e2e-devui-token-" + os.urandom(8).hex())
            repo.commit("e2e: clusters/loopback; infrastructure health checks time out in 20s; secrets for its key")
            # A cluster with nodes, none of them a Hyperlight node.
            plane.kubectl("create", "-f", "-", input=json.dumps(_node("plain-0", {})))
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(repo.render(LOOPBACK, "LoadRestrictionsNone")))
            yield Cluster(plane, repo)


def test_without_a_hyperlight_node_infrastructure_is_not_ready_and_the_app_waits(cluster):
    ready = cluster.infra_not_ready_because_of("DaemonSet/", "Job/")
    print(f"infrastructure: {ready['reason']}: {ready['message']}")
    daemonset = cluster.plane.get("daemonset", "hyperlight-device-plugin", NAMESPACE)
    assert daemonset["status"]["desiredNumberScheduled"] == 0  # what kstatus alone would call rolled out
    app = cluster.kustomization(cluster.app)
    assert _condition(app).get("status") != "True"
    assert "dependency" in _condition(app).get("message", ""), _condition(app)
    assert cluster.app_deployment() is None


def test_a_labelled_node_whose_plugin_has_not_registered_is_not_enough(cluster):
    cluster.plane.kubectl("create", "-f", "-", input=json.dumps(_node(
        "hyperlight-0", {"hyperlight.dev/enabled": "true", "hyperlight.dev/hypervisor": "kvm"})))
    cluster.wait(lambda: (cluster.plane.get("daemonset", "hyperlight-device-plugin", NAMESPACE)["status"]
                          .get("numberAvailable") == 1), "the plugin's pod available on hyperlight-0")
    ready = cluster.infra_not_ready_because_of("Job/", not_waiting=("DaemonSet/",))
    print(f"infrastructure: {ready['reason']}: {ready['message']}")
    (pod,) = json.loads(cluster.plane.kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                              "app.kubernetes.io/name=hypervisor-check", "-o", "json").stdout)["items"]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    assert cluster.app_deployment() is None


def test_once_the_node_offers_the_resource_infrastructure_becomes_ready_and_the_app_is_applied(cluster):
    offered = {RESOURCE: "2000"}
    node = cluster.plane.get("node", "hyperlight-0")
    patch = {"status": {"capacity": {**node["status"]["capacity"], **offered},
                        "allocatable": {**node["status"]["allocatable"], **offered}}}
    cluster.plane.kubectl("patch", "node", "hyperlight-0", "--subresource=status", "--type=merge",
                          "-p", json.dumps(patch))
    cluster.wait(lambda: _condition(cluster.kustomization(INFRA)).get("status") == "True", "infrastructure Ready")
    job = cluster.plane.get("job", "hypervisor-check", NAMESPACE)
    assert _condition(job, "Complete").get("status") == "True", job["status"]
    (pod,) = json.loads(cluster.plane.kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                              "app.kubernetes.io/name=hypervisor-check", "-o", "json").stdout)["items"]
    assert pod["spec"]["nodeName"] == "hyperlight-0"
    print(f"infrastructure: {_condition(cluster.kustomization(INFRA))['message']}")
    cluster.wait(cluster.app_deployment, "the app's Deployment applied once infrastructure is Ready")
