"""The Hyperlight device plugin's DaemonSet meets what the plugin needs, and the runtime configuration the slow
test (test_device_plugin.py) runs it under encodes exactly that DaemonSet: the two read the manifest through
device_plugin_contract, so they cannot drift (fast: nothing runs)."""

import pathlib
import re

import pytest
import yaml

import device_plugin_contract as dp
from conftest import ROOT

INFRA = ROOT / "infrastructure" / "hyperlight-device-plugin"
FAKE_PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}


def _docs(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _job() -> dict:
    (job,) = _docs(INFRA / "hypervisor-check.yaml")
    return job


def test_the_plugin_can_write_its_cdi_spec_and_serve_the_kubelet():
    c = dp.contract()
    cdi = c.mount_at(dp.CDI_DIR)
    assert cdi == dp.Mount(dp.CDI_DIR, dp.CDI_DIR, read_only=False, host_type="DirectoryOrCreate"), cdi
    plugins = c.mount_at(dp.DEVICE_PLUGIN_DIR)
    assert plugins == dp.Mount(dp.DEVICE_PLUGIN_DIR, dp.DEVICE_PLUGIN_DIR, read_only=False, host_type="Directory")
    assert c.mount_at("/dev") == dp.Mount("/dev", "/dev", read_only=True, host_type="Directory")
    # The host folders belong to root: root may write them without capabilities; nothing else may be left.
    assert (c.uid, c.gid, c.run_as_non_root, c.privileged) == (0, 0, False, False)
    assert c.capabilities == ()
    assert c.allow_privilege_escalation is False
    assert c.read_only_root is True
    assert c.seccomp == "RuntimeDefault"
    # The runtime must be able to create the termination log: not under a read-only mount.
    assert not any(c.termination_message_path.startswith(m.path + "/") for m in c.mounts if m.read_only)


def test_probes_check_the_socket_the_plugin_serves():
    c = dp.contract()
    assert c.liveness == c.readiness == ("test", "-S", dp.PLUGIN_SOCKET)
    assert dp.PLUGIN_SOCKET.startswith(c.mount_at(dp.DEVICE_PLUGIN_DIR).path + "/")


def test_it_runs_on_the_nodes_upstream_labels_and_hands_the_device_to_the_apps_user():
    c = dp.contract()
    assert c.node_selector == {"kubernetes.io/os": "linux", "hyperlight.dev/enabled": "true"}
    assert c.node_selector["hyperlight.dev/enabled"] == dp.UPSTREAM_NODE_LABELS["hyperlight.dev/enabled"]
    # No blanket toleration: only the key a Hyperlight pool may be tainted with.
    assert c.tolerations == ({"key": "hyperlight.dev/hypervisor", "operator": "Exists"},)
    (deployment,) = [d for d in _docs(ROOT / "base" / "deployment.yaml") if d["kind"] == "Deployment"]
    app = deployment["spec"]["template"]["spec"]
    assert (int(c.env["DEVICE_UID"]), int(c.env["DEVICE_GID"])) == (
        app["securityContext"]["runAsUser"], app["securityContext"]["runAsGroup"])
    # The app lands where the plugin runs.
    assert app["nodeSelector"].items() <= c.node_selector.items()


def test_the_image_is_upstreams_pinned_and_shared_with_the_readiness_check():
    daemonset = dp.load_daemonset()
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    assert re.fullmatch(r"ghcr\.io/hyperlight-dev/hyperlight-device-plugin(:[0-9a-f]{7,40}|@sha256:[0-9a-f]{64})", image), image
    (check,) = _job()["spec"]["template"]["spec"]["containers"]
    assert check["image"] == image


def test_readiness_needs_a_node_that_offers_the_resource():
    job = _job()
    pod = job["spec"]["template"]["spec"]
    (check,) = pod["containers"]
    assert check["resources"]["limits"][dp.RESOURCE] == "1"
    assert pod["restartPolicy"] == "Never"
    assert job["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/force"] == "enabled"
    assert pod["tolerations"] == list(dp.contract().tolerations)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert check["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
    assert "hypervisor-check.yaml" in yaml.safe_load((INFRA / "kustomization.yaml").read_text())["resources"]

    (infra,) = _docs(ROOT / "clusters" / "aks-prod" / "infrastructure.yaml")
    assert infra["spec"]["path"].strip("./") == "infrastructure/hyperlight-device-plugin"
    assert infra["spec"]["wait"] is True
    (expr,) = infra["spec"]["healthCheckExprs"]
    assert (expr["apiVersion"], expr["kind"]) == ("apps/v1", "DaemonSet")
    assert "status.desiredNumberScheduled > 0" in expr["current"]
    (app,) = _docs(ROOT / "clusters" / "aks-prod" / "apps.yaml")
    assert {"name": "infrastructure"} in app["spec"]["dependsOn"]


def test_the_runtime_configuration_encodes_the_contract(tmp_path):
    c = dp.contract()
    (tmp_path / "host" / dp.DEVICE_PLUGIN_DIR.lstrip("/")).mkdir(parents=True)
    (tmp_path / "host" / "dev").mkdir()
    config = dp.oci_config(c, args=[dp.ENTRYPOINT], host_root=tmp_path / "host", termination_log=tmp_path / "log",
                           seccomp_profile=FAKE_PROFILE, cgroup="/test")
    process = config["process"]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
    assert process["noNewPrivileges"] is True
    assert config["root"]["readonly"] is True
    assert config["linux"]["seccomp"] == FAKE_PROFILE
    assert config["linux"]["resources"]["memory"]["limit"] == 64 * 2**20
    assert {f"{k}={v}" for k, v in c.env.items()} <= set(process["env"])
    binds = {m["destination"]: m for m in config["mounts"] if m["type"] == "bind"}
    assert binds[dp.CDI_DIR]["source"] == str(tmp_path / "host" / dp.CDI_DIR.lstrip("/"))
    assert "rw" in binds[dp.CDI_DIR]["options"] and "rw" in binds[dp.DEVICE_PLUGIN_DIR]["options"]
    assert "ro" in binds["/dev"]["options"]
    assert (tmp_path / "host" / dp.CDI_DIR.lstrip("/")).is_dir()  # DirectoryOrCreate made it
    assert c.termination_message_path in binds
    destinations = [m["destination"] for m in config["mounts"]]
    assert destinations.index("/dev") < destinations.index("/dev/pts")  # parents first
    assert destinations.count("/dev") == 1  # the hostPath replaced the runtime's /dev


def test_the_runtime_configuration_refuses_what_it_cannot_reproduce(tmp_path):
    c = dp.contract()
    with pytest.raises(FileNotFoundError, match="type Directory"):  # the kubelet's folder must exist
        dp.oci_config(c, args=["x"], host_root=tmp_path, termination_log=tmp_path / "log",
                      seccomp_profile=FAKE_PROFILE, cgroup="/test")
    (tmp_path / dp.DEVICE_PLUGIN_DIR.lstrip("/")).mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    with pytest.raises(ValueError, match="RuntimeDefault"):
        dp.oci_config(c, args=["x"], host_root=tmp_path, termination_log=tmp_path / "log",
                      seccomp_profile=None, cgroup="/test")
    daemonset = dp.load_daemonset()
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    with pytest.raises(ValueError, match="privileged"):
        dp.oci_config(dp.contract(daemonset), args=["x"], host_root=tmp_path, termination_log=tmp_path / "log",
                      seccomp_profile=FAKE_PROFILE, cgroup="/test")


def test_capabilities_left_are_computed_as_the_runtime_does():
    daemonset = dp.load_daemonset()
    security = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["capabilities"] = {"drop": ["NET_RAW"], "add": ["SYS_ADMIN"]}
    caps = dp.contract(daemonset).capabilities
    assert "CAP_NET_RAW" not in caps and "CAP_SYS_ADMIN" in caps and "CAP_DAC_OVERRIDE" in caps


def test_the_test_double_uses_the_upstream_paths():
    """The double (used while the module proxy refuses the upstream module) keeps upstream's fixed paths."""
    source = (ROOT / "tests/deploy/deviceplugin/cmd/hyperlight-device-plugin-double/main.go").read_text()
    assert f'cdiSpecFile  = "{dp.CDI_SPEC}"' in source
    assert 'socketName   = "hyperlight.sock"' in source and dp.PLUGIN_SOCKET.endswith("/hyperlight.sock")
    assert f'resourceName = "{dp.RESOURCE}"' in source
