"""The Hyperlight device plugin, run under the DaemonSet's exact security context and mounts (slow).

Without a kubelet, runc plays the node's runtime: the OCI configuration comes from the DaemonSet itself
(device_plugin_contract.oci_config: user, no capabilities, no_new_privs, read-only root, containerd's
RuntimeDefault seccomp profile, the memory limit, the hostPath mounts with the host folders replaced by test
folders, the real /dev read-only), and a fake kubelet (tests/deploy/deviceplugin/cmd/fake-kubelet) serves the
device-plugin API v1beta1 Registration service on kubelet.sock in the test's device-plugin folder.

Which binary runs: the upstream plugin when scripts/tools/device-plugin.sh could build it from its Go module;
the module proxy refuses that module today, so it is the project's TEST DOUBLE of it
(tests/deploy/deviceplugin/cmd/hyperlight-device-plugin-double, the same contract: fixed paths, CDI spec,
registration, re-registration). The test prints which one and the proxy's answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import queue
import shutil
import stat
import subprocess
import tempfile
import threading
import time

import pytest

import device_plugin_contract as dp
from conftest import TOOLS

pytestmark = pytest.mark.slow

BIN = TOOLS / "bin"
OUT = TOOLS / "device-plugin"


def _host_reason() -> str | None:
    """Why this host cannot run the test, whatever was installed: stays a skip everywhere."""
    if os.geteuid() != 0:
        return f"runc needs root to run the plugin's container (euid {os.geteuid()})"
    if not (os.path.exists("/dev/kvm") or os.path.exists("/dev/mshv")):
        return "this host has neither /dev/kvm nor /dev/mshv: the plugin exits at start without a hypervisor"
    return None


def _tool_reason() -> str | None:
    """What scripts/tools/device-plugin.sh should have installed and did not: a failure under CI=true."""
    if not shutil.which("runc"):
        return "runc not installed: run scripts/tools/device-plugin.sh"
    for needed in (BIN / "fake-kubelet", OUT / "seccomp.json", OUT / "upstream.json"):
        if not needed.exists():
            return f"{needed} missing: run scripts/tools/device-plugin.sh"
    binary = BIN / json.loads((OUT / "upstream.json").read_text())["binary"]
    if not binary.exists():
        return f"{binary} missing: run scripts/tools/device-plugin.sh"
    return None


@pytest.fixture(scope="module")
def plugin_binary() -> pathlib.Path:
    reason = _host_reason()
    if reason:
        pytest.skip(reason)
    reason = _tool_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: the tools did not install: {reason}")
        pytest.skip(reason)
    upstream = json.loads((OUT / "upstream.json").read_text())
    binary = BIN / upstream["binary"]
    served = "built from its Go module" if upstream["served"] else f"NOT served by the module proxy ({upstream['error']})"
    print(f"\nupstream {upstream['module']}@{upstream['version']}: {served}; running {binary.name}")
    return binary


@pytest.fixture
def node_dir():
    """A short temporary folder: unix socket paths (the kubelet's, under it) are limited to 107 bytes."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="lci-dp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _copy_with_libraries(program: str, rootfs: pathlib.Path) -> None:
    """Put a host program and the shared libraries it loads into rootfs (the probe's `test`)."""
    source = pathlib.Path(shutil.which(program)).resolve()
    files = [source]
    for line in subprocess.run(["ldd", str(source)], capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        path = next((p for p in parts if p.startswith("/")), None)
        if path:
            files.append(pathlib.Path(path))
    for path in files:
        target = rootfs / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)
    (rootfs / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (rootfs / "usr/bin" / program).exists():
        shutil.copy2(source, rootfs / "usr/bin" / program)


def _node_dev(dev: pathlib.Path) -> None:
    """A node's /dev as the plugin and the runtime see it: this host's hypervisor device (the same character
    device, made with mknod) and /dev/null, plus the mount points a systemd node has (pts, shm, mqueue)."""
    for folder in ("pts", "shm", "mqueue"):
        (dev / folder).mkdir(parents=True, exist_ok=True)
    for name in ("kvm", "mshv", "null"):
        real = pathlib.Path("/dev") / name
        if real.exists():
            info = real.stat()
            os.mknod(dev / name, stat.S_IFCHR | 0o666, info.st_rdev)


class Node:
    """One run of the plugin's container next to a fake kubelet, in a temporary 'node'."""

    def __init__(self, tmp: pathlib.Path, contract: dp.Contract, binary: pathlib.Path):
        self.tmp, self.contract = tmp, contract
        self.kubelet_lines: list[str] = []
        self.host = tmp / "host"
        self.plugin_dir = self.host / dp.DEVICE_PLUGIN_DIR.lstrip("/")
        self.cdi_spec = self.host / dp.CDI_SPEC.lstrip("/")
        self.id = f"lci-dp-{os.getpid()}-{tmp.name[-12:]}".replace("_", "-")
        self.state = tmp / "runc-state"
        self.log = tmp / "plugin.log"
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        bundle = tmp / "bundle"
        rootfs = bundle / "rootfs"
        for folder in ("usr/local/bin", "tmp", "proc", "sys", "dev", "etc"):
            (rootfs / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, rootfs / dp.ENTRYPOINT.lstrip("/"))
        _copy_with_libraries("test", rootfs)
        self.plugin_dir.mkdir(parents=True, mode=0o755)  # the kubelet's folder exists on a node (type Directory)
        _node_dev(self.host / "dev")
        termination_log = tmp / "termination-log"
        termination_log.touch()
        config = dp.oci_config(contract, args=[dp.ENTRYPOINT], host_root=self.host, termination_log=termination_log,
                               seccomp_profile=json.loads((OUT / "seccomp.json").read_text()),
                               cgroup=f"/{self.id}")
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        self.bundle = bundle

    def __enter__(self):
        self.log_file = self.log.open("w")
        self.kubelet = subprocess.Popen([str(BIN / "fake-kubelet"), str(self.plugin_dir)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read_kubelet, daemon=True).start()
        assert self.next_event(10)["event"] == "listening"
        self.runc = subprocess.Popen(["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle), self.id],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        subprocess.run(["runc", "--root", str(self.state), "kill", self.id, "KILL"], capture_output=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.runc.wait(10)
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", self.id], capture_output=True)
        if self.runc.poll() is None:
            self.runc.kill()
        self.log_file.close()
        self.kubelet.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.kubelet.wait(5)
        if self.kubelet.poll() is None:
            self.kubelet.kill()

    def _read_kubelet(self):
        for line in self.kubelet.stdout:
            self.kubelet_lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))

    def next_event(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        event = None
        while event is None and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                event = self.events.get(timeout=0.2)
            if event is None and getattr(self, "runc", None) is not None and self.runc.poll() is not None:
                raise AssertionError(f"the plugin's container exited {self.runc.returncode}; log:\n{self.output()}")
        if event is None:
            raise AssertionError(f"the fake kubelet heard nothing in {timeout}s; its output: {self.kubelet_lines}; "
                                 f"plugin log:\n{self.output()}")
        self.seen.append(event)
        return event

    def output(self) -> str:
        self.log_file.flush()
        return self.log.read_text()

    def pid(self) -> int:
        state = subprocess.run(["runc", "--root", str(self.state), "state", self.id], capture_output=True, text=True)
        assert state.returncode == 0, state.stderr
        return json.loads(state.stdout)["pid"]

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """Run a probe's command in the container, as the kubelet's exec probe does (same security context)."""
        return subprocess.run(["runc", "--root", str(self.state), "exec", self.id, *command],
                              capture_output=True, text=True, timeout=30)


def _hypervisor() -> str:
    return "mshv" if os.path.exists("/dev/mshv") else "kvm"


def _status(pid: int) -> dict:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_plugin_writes_its_cdi_spec_and_registers_under_the_daemonset_security_context(plugin_binary, node_dir):
    contract = dp.contract()
    hypervisor = _hypervisor()
    with Node(node_dir, contract, plugin_binary) as node:
        register = node.next_event(30)
        assert register["event"] == "register", register
        assert (register["version"], register["endpoint"], register["resourceName"]) == (
            "v1beta1", "hyperlight.sock", dp.RESOURCE)
        plugin = node.next_event(30)
        print(f"fake kubelet: {json.dumps(plugin)}")
        print(f"plugin log:\n{node.output()}")
        assert not plugin.get("error"), plugin
        assert plugin["devices"] == int(contract.env.get("DEVICE_COUNT", "2000"))
        assert plugin["health"] == {"Healthy": plugin["devices"]}
        assert plugin["firstID"] == f"{hypervisor}-0"
        assert plugin["cdiDevices"] == [f"{dp.RESOURCE}={hypervisor}"]

        # The CDI spec, on the node's /var/run/cdi, where containerd reads it.
        spec = json.loads(node.cdi_spec.read_text())
        print(f"CDI spec {dp.CDI_SPEC}: {json.dumps(spec)}")
        assert spec["kind"] == dp.RESOURCE
        (device,) = spec["devices"]
        assert device["name"] == hypervisor
        (node_edit,) = device["containerEdits"]["deviceNodes"]
        assert node_edit == {"path": f"/dev/{hypervisor}", "type": "c", "permissions": "rw",
                             "uid": int(contract.env["DEVICE_UID"]), "gid": int(contract.env["DEVICE_GID"])}
        assert f"HYPERLIGHT_DEVICE_PATH=/dev/{hypervisor}" in device["containerEdits"]["env"]
        assert node.cdi_spec.stat().st_uid == 0
        assert (node.plugin_dir / "hyperlight.sock").is_socket()

        # It really ran as the DaemonSet says: the process's credentials, capabilities, no_new_privs, seccomp.
        status = _status(node.pid())
        assert status["Uid"].split()[:2] == [str(contract.uid)] * 2
        assert status["Gid"].split()[:2] == [str(contract.gid)] * 2
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"  # a filter
        root = [line for line in pathlib.Path(f"/proc/{node.pid()}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/"]
        assert root and "ro" in root[-1].split()[5].split(","), root

        # The DaemonSet's probes pass while it serves.
        for probe in (contract.liveness, contract.readiness):
            result = node.exec(*probe)
            assert result.returncode == 0, (probe, result.stdout, result.stderr)

        # A kubelet restart removes every plugin socket: the plugin serves and registers again.
        (node.plugin_dir / "hyperlight.sock").unlink()
        failing = node.exec(*contract.liveness)
        again = node.next_event(20)
        assert again["event"] == "register" and again["resourceName"] == dp.RESOURCE, again
        assert node.next_event(20)["devices"] == plugin["devices"]
        assert node.exec(*contract.liveness).returncode == 0
        print(f"liveness probe while the socket was gone: exit {failing.returncode}")


# The shapes that made the plugin exit at start: the DaemonSet before this fix (no CDI mount on a read-only root
# file system) and the CDI folder mounted read-only.
OLD_WAYS = {
    "no CDI mount, read-only root": lambda c: dataclasses.replace(
        c, mounts=tuple(m for m in c.mounts if m.path != dp.CDI_DIR)),
    "CDI folder mounted read-only": lambda c: dataclasses.replace(
        c, mounts=tuple(dataclasses.replace(m, read_only=True) if m.path == dp.CDI_DIR else m for m in c.mounts)),
}


@pytest.mark.parametrize("old_way", OLD_WAYS)
def test_plugin_exits_at_start_when_it_cannot_write_its_cdi_spec(plugin_binary, node_dir, old_way):
    contract = OLD_WAYS[old_way](dp.contract())
    with Node(node_dir, contract, plugin_binary) as node:
        try:
            code = node.runc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the plugin kept running ({old_way}); log:\n{node.output()}")
        output = node.output()
        print(f"{old_way}: exit {code}; log:\n{output}")
        assert code != 0
        assert "read-only file system" in output
        assert node.events.empty(), "it must not have registered"
        assert not node.cdi_spec.exists()


def test_termination_log_under_the_read_only_host_dev_would_not_start(plugin_binary, node_dir):
    """Why the DaemonSet moves terminationMessagePath out of /dev: the runtime cannot create the default
    /dev/termination-log inside the node's /dev mounted read-only (upstream notes the same on kind)."""
    contract = dataclasses.replace(dp.contract(), termination_message_path="/dev/termination-log")
    with Node(node_dir, contract, plugin_binary) as node:
        code = node.runc.wait(20)
        output = node.output()
        print(f"/dev/termination-log: runc exit {code}: {output}")
        assert code != 0 and "termination-log" in output and "read-only file system" in output
        assert node.events.empty()


def _run_hypervisor_check(node_dir: pathlib.Path, cdi: tuple[dict, str] | None,
                          label: str = "") -> subprocess.CompletedProcess:
    """Run the readiness Job's container (hypervisor-check.yaml) under its own security context, with the CDI
    device applied as containerd would (cdi = (spec, device name)) or without it (CDI off in containerd)."""
    contract = dp.job_contract()
    bundle = node_dir / f"check-{'cdi' if cdi else 'nocdi'}{label}"
    rootfs = bundle / "rootfs"
    for folder in ("usr/bin", "tmp", "proc", "sys", "dev", "etc"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "bin").symlink_to("usr/bin")
    for program in ("sh", "id"):  # the image has a shell with `test`, and `id`
        _copy_with_libraries(program, rootfs)
    (bundle / "termination-log").touch()
    config = dp.oci_config(contract, args=list(contract.command), host_root=bundle / "host",
                           termination_log=bundle / "termination-log",
                           seccomp_profile=json.loads((OUT / "seccomp.json").read_text()), cgroup=f"/{bundle.name}-{os.getpid()}")
    if cdi:
        dp.apply_cdi(config, *cdi)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    state, cid = node_dir / "runc-check", f"{bundle.name}-{os.getpid()}"
    try:
        return subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", cid], capture_output=True)


def test_the_readiness_check_passes_with_the_plugins_cdi_device_and_fails_without(plugin_binary, node_dir):
    """The chain on a node: the plugin writes its CDI spec; containerd applies it to a container that requested
    the resource (the readiness Job), which then finds the device read-write for its user; without CDI it fails
    and says why."""
    hypervisor = _hypervisor()
    with Node(node_dir, dp.contract(), plugin_binary) as node:
        assert node.next_event(30)["event"] == "register"
        spec = json.loads(node.cdi_spec.read_text())
    job = dp.job_contract()
    injected = _run_hypervisor_check(node_dir, (spec, hypervisor))
    print(f"with CDI: exit {injected.returncode}: {injected.stdout.strip()} {injected.stderr.strip()}")
    assert injected.returncode == 0, injected
    assert injected.stdout.strip() == (
        f"CDI injected /dev/{hypervisor} ({hypervisor}), read-write for {job.uid}:{job.gid}")
    # A device the app's user may not open (DEVICE_UID/GID not the app's user) fails the check too.
    wrong_owner = json.loads(json.dumps(spec))
    for node_edit in wrong_owner["devices"][0]["containerEdits"]["deviceNodes"]:
        node_edit.update(uid=0, gid=0)
    if os.stat(f"/dev/{hypervisor}").st_mode & 0o006 == 0:  # the host device is not open to others (0600 here)
        assert _run_hypervisor_check(node_dir, (wrong_owner, hypervisor), "root-owned").returncode == 1
    missing = _run_hypervisor_check(node_dir, None)
    print(f"without CDI: exit {missing.returncode}: {missing.stderr.strip()}")
    assert missing.returncode == 1
    assert "is CDI enabled in containerd" in missing.stderr
