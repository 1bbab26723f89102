"""What overlays/prod/topology-spread.yaml's comment promises, checked with the real kube-scheduler: over the
nodes the pods may run on, replicas per node differ by at most one (DoNotSchedule); with as many nodes as replicas
no node runs two, with fewer nodes some run two but all are placed. Zones are only a preference."""
import json
import os

import pytest
import yaml

from controlplane import FAKE_NODE_ANNOTATION, wait_until
from gitops import ROOT

pytestmark = pytest.mark.slow


def _spread_constraints() -> list[dict]:
    patch = yaml.safe_load((ROOT / "overlays/prod/topology-spread.yaml").read_text())
    return patch["spec"]["template"]["spec"]["topologySpreadConstraints"]


def _placement(plane, namespace: str, nodes: int, replicas: int) -> dict[str, int]:
    """Create NODES fake nodes (3 zones) that only this case's pods select, a Deployment of REPLICAS with prod's
    constraints; return how many pods each node got once all are scheduled (or fail naming the pending ones)."""
    run = os.urandom(3).hex()
    label = {"e2e-spread": run}
    for index in range(nodes):
        name = f"spread-{run}-{index}"
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                             "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"z{index % 3}",
                                        **label}},
                "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                           "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}
        plane.kubectl("create", "-f", "-", input=json.dumps(node))
    plane.kubectl("create", "namespace", namespace)
    app = {"app.kubernetes.io/name": "local-code-interpreter"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "spread", "namespace": namespace},
                  "spec": {"replicas": replicas, "selector": {"matchLabels": app},
                           "template": {"metadata": {"labels": app},
                                        "spec": {"nodeSelector": label, "topologySpreadConstraints": _spread_constraints(),
                                                 "containers": [{"name": "app", "image": "registry.example/x:1"}]}}}}
    plane.kubectl("create", "-f", "-", input=json.dumps(deployment))

    def scheduled():
        pods = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        placed = [p["spec"].get("nodeName") for p in pods]
        return placed if len(placed) == replicas and all(placed) else None
    placed = wait_until(scheduled, 60, f"{replicas} pods scheduled on {nodes} nodes")
    counts = {f"spread-{run}-{i}": 0 for i in range(nodes)}
    for node in placed:
        counts[node] += 1
    return counts


def test_as_many_nodes_as_replicas_means_one_per_node(control_plane):
    counts = _placement(control_plane, "spread-three", nodes=3, replicas=3)
    assert sorted(counts.values()) == [1, 1, 1], counts


def test_fewer_nodes_than_replicas_still_places_all_within_a_skew_of_one(control_plane):
    counts = _placement(control_plane, "spread-two", nodes=2, replicas=3)
    assert sorted(counts.values()) == [1, 2], counts


def test_more_nodes_than_replicas_never_doubles_up(control_plane):
    counts = _placement(control_plane, "spread-five", nodes=5, replicas=3)
    assert max(counts.values()) == 1 and sum(counts.values()) == 3, counts
