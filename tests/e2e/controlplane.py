"""A real Kubernetes control plane with Flux, on loopback, for the end-to-end tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes whose pods become Ready, so
Flux's health checks can pass) and the Flux source- and kustomize-controller: the binaries that
scripts/tools/controlplane.sh builds into $LCI_TOOLS/bin. Every process listens on 127.0.0.1 only, keeps its
state and log under one work directory, and is stopped (terminated, then killed) when the control plane stops.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from pki import make_pki

TOOLS = Path(os.environ.get("LCI_TOOLS") or Path.home() / ".cache" / "local-code-interpreter")
BIN = TOOLS / "bin"
FLUX_CRDS = TOOLS / "flux-crds"
# The Flux notification API's and CiliumNetworkPolicy's CRDs (scripts/tools/gitops.sh).
EXTRA_CRDS = TOOLS / "crds-extra"
KWOK_STAGES = TOOLS / "kwok-stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
            "source-controller", "kustomize-controller")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
START_TIMEOUT = 90
STOP_TIMEOUT = 15


def missing_tools() -> list[str]:
    """What the control plane needs and does not find: binaries, the Flux CRDs, kubectl."""
    missing = [str(BIN / name) for name in BINARIES if not os.access(BIN / name, os.X_OK)]
    if not list(FLUX_CRDS.glob("*.yaml")):
        missing.append(f"{FLUX_CRDS}/*.yaml")
    if not KWOK_STAGES.exists():
        missing.append(str(KWOK_STAGES))
    if not list(EXTRA_CRDS.glob("*.yaml")):
        missing.append(f"{EXTRA_CRDS}/*.yaml (scripts/tools/gitops.sh)")
    if not _which("kubectl"):
        missing.append("kubectl on PATH")
    return missing


def _which(name: str) -> bool:
    return any(os.access(Path(d) / name, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessExited(RuntimeError):
    """A control plane process ended while it should be serving."""


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    """Call check() until it returns something truthy; fail after timeout seconds, naming what was awaited."""
    deadline, last_error = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as error:  # noqa: BLE001 - the last error is reported on time-out
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s (last error: {last_error})")


class ControlPlane:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.kubeconfig = workdir / "kubeconfig"
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._token = os.urandom(16).hex()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.workdir / "pki")
        self._start_etcd()
        self._start_apiserver(pki)
        self._start("kube-controller-manager", "--leader-elect=false", "--bind-address=127.0.0.1",
                    "--secure-port=0", f"--service-account-private-key-file={pki['service-account.key']}",
                    f"--root-ca-file={pki['ca.crt']}", "--use-service-account-credentials=false")
        self._start("kube-scheduler", "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0")
        self._start("kwok", f"--config={KWOK_STAGES}",
                    f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                    f"--server-address=127.0.0.1:{free_port()}", "--node-ip=127.0.0.1",
                    "--node-lease-duration-seconds=40")  # the heartbeat: without it nodes go NotReady
        self.kubectl("apply", "--server-side", "-f", str(FLUX_CRDS))
        self.kubectl("apply", "--server-side", "-f", str(EXTRA_CRDS))
        # Right after the apply a CRD may have no status yet, which `kubectl wait` reports as an error: retry.
        wait_until(lambda: self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=20s",
                                        check=False).returncode == 0, 60, "CRDs established", interval=1)
        self.kubectl("create", "namespace", "flux-system")
        self._start_flux()
        self._assert_running()

    def stop(self) -> None:
        """Stop every process, the last started first; each gets STOP_TIMEOUT seconds before it is killed."""
        while self._processes:
            name, process = self._processes.pop()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(STOP_TIMEOUT)

    # -- components --------------------------------------------------------------------------------------------
    def _start(self, name: str, *args: str, env: dict | None = None, kubeconfig: bool = True) -> None:
        command = [str(BIN / name), *args] + ([f"--kubeconfig={self.kubeconfig}"] if kubeconfig else [])
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it from here
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=self.workdir, start_new_session=True)
        log.close()
        self._processes.append((name, process))

    def _assert_running(self, *names: str) -> None:
        for name, alive in self.running().items():
            if not alive and (name in names or not names):
                raise ProcessExited(f"{name} exited:\n{self.log_tail(name)}")

    def _wait_ready(self, name: str, check) -> None:
        """Wait until check() passes; fail at once, with its log, if the process name has exited."""
        def ready():
            self._assert_running(name)
            return check()
        try:
            wait_until(ready, START_TIMEOUT, f"{name} ready")
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.log_tail(name)}") from None

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self._start("etcd", "--name=e2e", f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=e2e=http://127.0.0.1:{peer}",
                    "--unsafe-no-fsync", "--log-level=warn", kubeconfig=False)
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._wait_ready("etcd", lambda: json.load(urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2))
                         ["health"] == "true")

    def _start_apiserver(self, pki: dict[str, Path]) -> None:
        port = free_port()
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self._token},e2e-admin,e2e-admin,"system:masters"\n')
        self._start("kube-apiserver", f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1", f"--secure-port={port}",
                    f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
                    f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
                    f"--service-account-issuer=https://127.0.0.1:{port}",
                    f"--service-account-key-file={pki['service-account.key']}",
                    f"--service-account-signing-key-file={pki['service-account.key']}",
                    "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none",
                    "--allow-privileged=true", f"--cert-dir={self.workdir / 'pki'}", kubeconfig=False)
        self.server = f"https://127.0.0.1:{port}"
        self._write_kubeconfig(pki["ca.crt"])
        context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self._token}"})
        self._wait_ready("kube-apiserver",
                         lambda: urllib.request.urlopen(request, context=context, timeout=5).read() == b"ok")

    def _write_kubeconfig(self, ca: Path) -> None:
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.server, "certificate-authority": str(ca)}}],
            "users": [{"name": "e2e-admin", "user": {"token": self._token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-admin"}}],
        }))

    def _start_flux(self) -> None:
        env = {"KUBECONFIG": str(self.kubeconfig), "RUNTIME_NAMESPACE": "flux-system"}
        storage = free_port()
        (self.workdir / "artifacts").mkdir()
        health = {"source-controller": free_port(), "kustomize-controller": free_port()}
        self._start("source-controller", f"--storage-path={self.workdir / 'artifacts'}",
                    f"--storage-addr=127.0.0.1:{storage}", f"--storage-adv-addr=127.0.0.1:{storage}",
                    f"--metrics-addr=127.0.0.1:{free_port()}", f"--health-addr=127.0.0.1:{health['source-controller']}",
                    "--enable-leader-election=false", env=env, kubeconfig=False)
        # Dependencies (dependsOn) are retried every 5s instead of 30s: less waiting, same behaviour.
        self._start("kustomize-controller", f"--metrics-addr=127.0.0.1:{free_port()}",
                    f"--health-addr=127.0.0.1:{health['kustomize-controller']}",
                    "--enable-leader-election=false", "--requeue-dependency=5s", env=env, kubeconfig=False)
        for name, port in health.items():
            self._wait_ready(name, lambda port=port: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",
                                                                            timeout=2).status == 200)

    # -- clients -----------------------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The live object as a dict, or None when it does not exist."""
        scope = ["--namespace", namespace] if namespace else []
        result = self.kubectl("get", kind, name, *scope, "--output=json", "--ignore-not-found")
        return json.loads(result.stdout) if result.stdout.strip() else None

    def running(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self._processes}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


if __name__ == "__main__":
    # Manual use: start the control plane, print how to reach it, stop it on Ctrl-C.
    import sys
    import tempfile

    if missing_tools():
        sys.exit("missing (run: bash scripts/tools/controlplane.sh): " + ", ".join(missing_tools()))
    with tempfile.TemporaryDirectory(prefix="lci-controlplane-") as directory, ControlPlane(Path(directory)) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}   # logs: {plane.logs}; Ctrl-C stops everything", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
