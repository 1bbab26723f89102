"""The Hyperlight device plugin's DaemonSet as a container runtime sees it, for the device-plugin tests.

`contract()` reads infrastructure/hyperlight-device-plugin/daemonset.yaml and returns what a node does with the
plugin's container: the user, capabilities, root file system, seccomp profile, the host folders mounted and
where, the probe command. `oci_config()` turns that into the OCI runtime configuration that containerd's CRI
plugin would hand runc for it (the mounts the kubelet adds included), with the host folders replaced by test
folders. tests/deploy/test_device_plugin.py runs the plugin's binary with that configuration under runc;
tests/deploy/test_device_plugin_contract.py checks, without running anything, that the contract is the one the
plugin needs and that the configuration encodes it. Both read the manifest through this module, so what runs
in the test cannot drift from what the cluster runs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import stat

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DAEMONSET = ROOT / "infrastructure" / "hyperlight-device-plugin" / "daemonset.yaml"
CONTAINER = "device-plugin"
# The readiness check: a Job that requests the resource and checks what CDI injected.
HYPERVISOR_CHECK = ROOT / "infrastructure" / "hyperlight-device-plugin" / "hypervisor-check.yaml"

# The paths the upstream plugin uses (hyperlight-on-kubernetes, device-plugin/main.go): constants in its code.
CDI_DIR = "/var/run/cdi"
CDI_SPEC = f"{CDI_DIR}/hyperlight.json"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"  # pluginapi.DevicePluginPath
PLUGIN_SOCKET = f"{DEVICE_PLUGIN_DIR}/hyperlight.sock"
KUBELET_SOCKET = f"{DEVICE_PLUGIN_DIR}/kubelet.sock"  # pluginapi.KubeletSocket
RESOURCE = "hyperlight.dev/hypervisor"
# The node labels upstream's AKS scripts put on Hyperlight node pools (deploy/azure/setup.sh).
UPSTREAM_NODE_LABELS = {"hyperlight.dev/enabled": "true", "hyperlight.dev/hypervisor": ("kvm", "mshv")}
# Where the image keeps the plugin (upstream Dockerfile: COPY ... /usr/local/bin/, ENTRYPOINT hyperlight-device-plugin).
ENTRYPOINT = "/usr/local/bin/hyperlight-device-plugin"

# Capabilities containerd grants when a container does not drop them (its default spec), for the translation.
CONTAINERD_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


@dataclasses.dataclass(frozen=True)
class Mount:
    path: str  # in the container
    host_path: str
    read_only: bool
    host_type: str  # hostPath.type


@dataclasses.dataclass(frozen=True)
class Contract:
    uid: int
    gid: int
    run_as_non_root: bool
    privileged: bool
    allow_privilege_escalation: bool
    read_only_root: bool
    capabilities: tuple[str, ...]  # what is left after drop/add, as CAP_ names
    seccomp: str  # RuntimeDefault, Unconfined, Localhost/...
    mounts: tuple[Mount, ...]
    liveness: tuple[str, ...]
    readiness: tuple[str, ...]
    env: dict
    memory_limit: str
    command: tuple[str, ...]  # command + args; empty: the image's entrypoint
    node_selector: dict
    tolerations: tuple
    termination_message_path: str

    def mount_at(self, path: str) -> Mount | None:
        return next((m for m in self.mounts if m.path == path), None)


def load_daemonset(path: pathlib.Path = DAEMONSET) -> dict:
    (daemonset,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "DaemonSet"]
    return daemonset


def load_job(path: pathlib.Path = HYPERVISOR_CHECK) -> dict:
    (job,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Job"]
    return job


def _capabilities(security: dict) -> tuple[str, ...]:
    caps = security.get("capabilities") or {}
    drop = {c.upper() for c in caps.get("drop") or []}
    left = [] if "ALL" in drop else [c for c in CONTAINERD_DEFAULT_CAPS if c.removeprefix("CAP_") not in drop]
    left += [f"CAP_{c.upper()}" for c in caps.get("add") or [] if f"CAP_{c.upper()}" not in left]
    return tuple(left)


def contract(daemonset: dict | None = None) -> Contract:
    """What the node runs for the DaemonSet's plugin container (pod-level settings folded in as the kubelet does)."""
    daemonset = daemonset or load_daemonset()
    return container_contract(daemonset["spec"]["template"]["spec"], CONTAINER)


def job_contract(job: dict | None = None) -> Contract:
    """The same for the readiness check's container."""
    pod = (job or load_job())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container_contract(pod, container["name"])


def container_contract(pod: dict, name: str) -> Contract:
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    pod_security = pod.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        host = volumes[mount["name"]].get("hostPath")
        if host is None:
            raise ValueError(f"volume {mount['name']} is not a hostPath: the test harness only reproduces hostPaths")
        mounts.append(Mount(mount["mountPath"], host["path"], bool(mount.get("readOnly", False)), host.get("type", "")))
    probe = lambda name: tuple((container.get(name) or {}).get("exec", {}).get("command") or ())  # noqa: E731
    seccomp = (security.get("seccompProfile") or {}).get("type", "Unconfined")
    return Contract(
        uid=int(security.get("runAsUser", 0)),  # the image's user is root
        gid=int(security.get("runAsGroup", 0)),
        run_as_non_root=bool(security.get("runAsNonRoot", False)),
        privileged=bool(security.get("privileged", False)),
        # Kubernetes' default is true; false sets no_new_privs.
        allow_privilege_escalation=bool(security.get("allowPrivilegeEscalation", True)),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        capabilities=_capabilities(security),
        seccomp=seccomp,
        mounts=tuple(mounts),
        liveness=probe("livenessProbe"),
        readiness=probe("readinessProbe"),
        env={e["name"]: e["value"] for e in container.get("env") or [] if "value" in e},
        memory_limit=((container.get("resources") or {}).get("limits") or {}).get("memory", ""),
        command=tuple(container.get("command") or ()) + tuple(container.get("args") or ()),
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(pod.get("tolerations") or ()),
        termination_message_path=container.get("terminationMessagePath", "/dev/termination-log"),
    )


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(quantity: str) -> int:
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def oci_config(c: Contract, *, args: list[str], host_root: pathlib.Path, termination_log: pathlib.Path,
               seccomp_profile: dict | None, cgroup: str) -> dict:
    """The OCI runtime config containerd's CRI plugin would produce for the contract.

    Host paths are looked up under host_root (host_root / "var/run/cdi" stands for the node's /var/run/cdi, and
    host_root / "dev" for its /dev). seccomp_profile is the runtime's default profile (containerd's, as JSON),
    used when the contract asks for RuntimeDefault.
    """
    if c.privileged:
        raise ValueError("a privileged container is not what this harness reproduces")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    for m in c.mounts:
        source = str(host_root / m.host_path.lstrip("/"))
        if m.host_type == "DirectoryOrCreate":
            pathlib.Path(source).mkdir(mode=0o755, parents=True, exist_ok=True)
        elif m.host_type == "Directory" and not pathlib.Path(source).is_dir():
            raise FileNotFoundError(f"hostPath {m.host_path} (type Directory) missing: {source}")
        options = ["rbind", "rprivate", "ro" if m.read_only else "rw"]
        # A user's mount replaces the runtime's default one at the same place (containerd: WithMounts).
        mounts = [x for x in mounts if x["destination"] != m.path]
        mounts.append({"destination": m.path, "type": "bind", "source": source, "options": options})
    mounts.append({"destination": c.termination_message_path, "type": "bind", "source": str(termination_log),
                   "options": ["rbind", "rprivate", "rw"]})
    # containerd orders mounts by the depth of their destination, so parents are mounted first.
    mounts.sort(key=lambda x: len(pathlib.PurePosixPath(x["destination"]).parts))
    caps = list(c.capabilities)
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": c.uid, "gid": c.gid},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    *(f"{k}={v}" for k, v in c.env.items())],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": not c.allow_privilege_escalation,
        },
        "root": {"path": "rootfs", "readonly": c.read_only_root},
        "hostname": "hyperlight-device-plugin",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": cgroup,
            "resources": {"memory": {"limit": quantity_bytes(c.memory_limit)}} if c.memory_limit else {},
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if c.seccomp == "RuntimeDefault":
        if seccomp_profile is None:
            raise ValueError("the contract asks for RuntimeDefault but no runtime default profile was given")
        config["linux"]["seccomp"] = seccomp_profile
    elif c.seccomp != "Unconfined":
        raise ValueError(f"seccomp profile {c.seccomp} is not reproduced by this harness")
    return config


def apply_cdi(config: dict, spec: dict, name: str) -> dict:
    """What containerd does with CDI device `kind=name` (the device plugin's Allocate answer): the spec's
    containerEdits applied to the OCI config. Device nodes get the host device's numbers and mode, the spec's
    owner, and a cgroup rule allowing the spec's permissions; environment entries are added."""
    (device,) = [d for d in spec["devices"] if d["name"] == name]
    edits = device.get("containerEdits") or {}
    linux = config["linux"]
    for node in edits.get("deviceNodes") or []:
        info = os.stat(node.get("hostPath", node["path"]))
        linux.setdefault("devices", []).append({
            "path": node["path"], "type": node.get("type", "c"), "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev), "fileMode": stat.S_IMODE(info.st_mode),
            "uid": node.get("uid", 0), "gid": node.get("gid", 0)})
        linux.setdefault("resources", {}).setdefault("devices", []).append({
            "allow": True, "type": node.get("type", "c"), "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev), "access": node.get("permissions", "rwm")})
    config["process"]["env"] += edits.get("env") or []
    return config
