"""The container image, built from the real Dockerfile and run the way the Kubernetes pod runs it.

No Docker engine and no registry here: podman (runc, cgroupfs) builds the Dockerfile on a Debian Python base made
with debootstrap by scripts/tools/podman.sh (cached), then runs the image read-only, as UID 65534, with every
capability dropped, no privilege escalation and only /tmp writable, and checks /health, a real code execution
through /v1/responses on the embedded default, the process identities, and that SIGTERM stops it within 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "image-test-" + uuid.uuid4().hex
NOBODY = 65534
# This machine runs containers with runc and cgroupfs (no systemd), and low default ulimits for the runtime.
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# The pod's security context, as podman flags.
HARDENED = ["--read-only", "--user", str(NOBODY), "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--tmpfs", "/tmp"]
HEALTH_TIMEOUT = 60.0
STOP_LIMIT = 2.0
REPORT: dict[str, object] = {}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout)


_capture = None


def say(line: str) -> None:
    """Print past pytest's capture, so the numbers show up in the test run's output."""
    if _capture is None:
        print(f"[image] {line}", flush=True)
        return
    with _capture.global_and_fixture_disabled():
        print(f"\n[image] {line}", flush=True)


@pytest.fixture(scope="module", autouse=True)
def _reporter(pytestconfig):
    global _capture
    _capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    yield
    _capture = None


@pytest.fixture(scope="module")
def base_image() -> str:
    """The tools and the local Python base image (scripts/tools/podman.sh is idempotent and quick when cached)."""
    start = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "scripts/tools/podman.sh")], capture_output=True, text=True,
                          timeout=900)
    missing = [tool for tool in ("podman", "buildah", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed and scripts/tools/podman.sh could not install them: "
                    f"{(done.stderr or done.stdout).strip()[-500:] or 'no output'}")
    if done.returncode != 0:
        pytest.fail(f"scripts/tools/podman.sh failed to make the base image:\n{done.stdout}\n{done.stderr}")
    name = os.environ.get("LCI_BASE_IMAGE", f"localhost/lci-python-base:{os.environ.get('LCI_BASE_SUITE', 'bookworm')}-v1")
    assert podman("image", "exists", name, check=False).returncode == 0, f"base image {name} missing after podman.sh"
    REPORT["base_image_seconds"] = round(time.monotonic() - start, 1)
    say(f"base image {name} ready in {REPORT['base_image_seconds']} s ({done.stderr.strip() or 'cached'})")
    return name


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    """The project's real Dockerfile, built by scripts/image-build on the local base."""
    tag = f"localhost/local-code-interpreter:test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    env = {**os.environ, "LCI_BASE_IMAGE": base_image, "CONTAINER_ENGINE": "podman"}
    done = subprocess.run([str(ROOT / "scripts/image-build"), "--local-base", "-t", tag], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"image build failed (exit {done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")
    REPORT["build_seconds"] = round(time.monotonic() - start, 1)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    REPORT["image_bytes"] = size
    say(f"built {tag} in {REPORT['build_seconds']} s; image size {size / 1e6:.0f} MB ({size} bytes)")
    yield tag
    podman("rmi", "-f", tag, check=False)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "image.json").write_text(json.dumps(REPORT, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, token: str | None = None, timeout: float = 30) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Container:
    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-8000:]


@pytest.fixture(scope="module")
def container(image: str):
    """The image under the pod's security context, its port published on loopback; healthy before the tests."""
    name = f"lci-image-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    start = time.monotonic()
    podman("run", "-d", "--name", name, *ULIMITS, *HARDENED, "-e", f"DEVUI_AUTH_TOKEN={TOKEN}",
           "-p", f"127.0.0.1:{port}:8090", image)
    box = Container(name, port)
    try:
        while True:
            try:
                status, _ = http(f"{box.url}/health", timeout=2)
            except (OSError, urllib.error.URLError):
                status = None
            if status == 200:
                break
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            if state not in ("created", "running", "configured"):
                pytest.fail(f"container {state} before it was healthy:\n{box.logs()}")
            if time.monotonic() - start > HEALTH_TIMEOUT:
                pytest.fail(f"/health not 200 within {HEALTH_TIMEOUT} s (last {status}):\n{box.logs()}")
            time.sleep(0.1)
        REPORT["seconds_to_healthy"] = round(time.monotonic() - start, 2)
        say(f"container {name} healthy {REPORT['seconds_to_healthy']} s after `podman run`")
        yield box
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_health_answers_without_token(container: Container):
    status, body = http(f"{container.url}/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "healthy"


def test_api_requires_the_token(container: Container):
    status, _ = http(f"{container.url}/v1/entities")
    assert status == 401
    status, _ = http(f"{container.url}/v1/entities", token="wrong-" + TOKEN)
    assert status == 401


@pytest.mark.parametrize("code", [
    "print(6*7)",
    # the image's interpreter lives in a virtual environment: the sandbox must let it start itself again
    "import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(6*7)'], capture_output=True, "
    "text=True).stdout or 'no output')",
], ids=["print", "interpreter-in-a-subprocess"])
def test_responses_runs_code_on_the_embedded_default(container: Container, code: str):
    texts = _replies(container, code)
    assert any("42" in text.split() or "42\n" in text for text in texts), (texts, container.logs())


def _replies(box: Container, code: str) -> list[str]:
    """The texts of the reply's messages to `code`, sent through /v1/responses (the DevUI entity's path)."""
    status, body = http(f"{box.url}/v1/entities", token=TOKEN)
    assert status == 200, body
    entities = json.loads(body)["entities"]
    assert entities, "no entity registered"
    entity = entities[0]["id"]
    request = {"model": entity, "input": code, "metadata": {"entity_id": entity}}
    status, body = http(f"{box.url}/v1/responses", request, token=TOKEN, timeout=60)
    assert status == 200, body
    response = json.loads(body)
    return [part.get("text", "") for item in response.get("output", []) if item.get("type") == "message"
            for part in item.get("content", [])]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="host cannot: tasks of nobody on the host need root and setpriv (util-linux)")
def test_a_neighbour_running_as_the_same_user_takes_no_process_allowance(image: str):
    """Another container on the host running as the same user (another replica on the node, any image that runs
    as nobody): RLIMIT_NPROC counts its tasks uid-wide, and this container cannot see them. With 200 such tasks
    (here: on the host, as nobody) the code still starts processes, and the log says what the sandbox found
    (`sandbox/tasks.py`; without it a one-shot run could not start one)."""
    neighbours = [subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                    "sleep", "300"]) for _ in range(200)]
    name = f"lci-image-test-neighbours-{uuid.uuid4().hex[:8]}"
    try:
        box = _started(image, name)
        texts = _replies(box, "import subprocess\nprint(sum(subprocess.run(['true']).returncode == 0 "
                              "for _ in range(5)))")
        assert any("5" in text.split() for text in texts), (texts, box.logs())
        assert "that this container cannot see count against" in box.logs(), box.logs()
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()


def test_runs_as_nobody_without_capabilities_on_a_read_only_root(container: Container):
    script = ("for p in /proc/[0-9]*; do "
              "  printf '%s %s %s %s %s\\n' \"${p#/proc/}\" "
              "    \"$(awk '/^Uid:/{print $2\",\"$3}' $p/status)\" \"$(awk '/^Gid:/{print $2\",\"$3}' $p/status)\" "
              "    \"$(awk '/^CapEff:/{print $2}' $p/status)\" \"$(tr '\\0' ' ' < $p/cmdline | cut -c1-120)\"; "
              "done 2>/dev/null")
    ps = podman("exec", container.name, "sh", "-c", script).stdout
    rows = [row for row in (line.split(" ", 4) for line in ps.splitlines()) if len(row) == 5 and row[1]]
    server = [row for row in rows if "local_code_interpreter" in row[4] and "sandbox.template" not in row[4]
              and "tini" not in row[4]]
    assert server, ps
    for pid, uid, gid, cap_eff, cmdline in rows:
        if cmdline.startswith("sh -c") or not cmdline.strip():
            continue  # the probe itself
        assert uid == f"{NOBODY},{NOBODY}", ps
        assert gid == f"{NOBODY},{NOBODY}", ps
        assert int(cap_eff, 16) == 0, ps
    pid1 = next(row for row in rows if row[0] == "1")
    REPORT["pid1"] = pid1[4].strip()
    say(f"PID 1: {pid1[4].strip()}; server: {server[0][4].strip()} (uid/gid {server[0][1]}/{server[0][2]})")
    denied = podman("exec", container.name, "sh", "-c", "touch /opt/venv/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    home = podman("exec", container.name, "sh", "-c", "echo $HOME $TMPDIR $XDG_CACHE_HOME").stdout.split()
    assert home == ["/tmp", "/tmp", "/tmp/.cache"]


def test_labels_and_entrypoint(image: str):
    config = json.loads(podman("image", "inspect", image).stdout)[0]
    labels = config.get("Labels") or config["Config"].get("Labels") or {}
    assert labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert "org.opencontainers.image.source" in labels
    entrypoint = config["Config"]["Entrypoint"]
    assert entrypoint[-8:] == ["-m", "local_code_interpreter", "--devui", "--port", "8090", "--host", "0.0.0.0",
                               "--no-browser"]
    assert config["Config"]["User"] == f"{NOBODY}:{NOBODY}"


def test_sigterm_stops_it_within_two_seconds(container: Container):
    """Last in the file: it stops the shared container."""
    # One more request first, so the fork server and the connection pool are warm, as in real use.
    assert http(f"{container.url}/health")[0] == 200
    start = time.monotonic()
    podman("kill", "--signal", "TERM", container.name)
    waited = podman("wait", container.name, timeout=30)
    elapsed = time.monotonic() - start
    REPORT["sigterm_stop_seconds"] = round(elapsed, 2)
    exit_code = waited.stdout.strip()
    say(f"SIGTERM to stopped: {elapsed:.2f} s (exit code {exit_code}); report in test-artifacts/image.json")
    assert elapsed < STOP_LIMIT, container.logs()
    assert exit_code != "137", "killed by SIGKILL, not stopped by SIGTERM"
    assert "Finished server process" in container.logs() or "shutdown" in container.logs().lower()


def _started(image: str, name: str) -> Container:
    """A container of the image as the `container` fixture runs it, named `name`, once /health answers."""
    port = free_port()
    podman("run", "-d", "--name", name, *ULIMITS, *HARDENED, "-e", f"DEVUI_AUTH_TOKEN={TOKEN}",
           "-p", f"127.0.0.1:{port}:8090", image)
    box = Container(name, port)
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while True:
        try:
            if http(f"{box.url}/health", timeout=2)[0] == 200:
                return box
        except (OSError, urllib.error.URLError):
            pass
        assert time.monotonic() < deadline, box.logs()
        time.sleep(0.1)


def test_sigterm_with_an_execution_in_flight_stops_within_two_seconds(image: str):
    """What a rolling update does: SIGTERM while the sandbox runs code. In-flight requests get 1 s, then go."""
    name = f"lci-image-test-busy-{uuid.uuid4().hex[:8]}"
    try:
        box = _started(image, name)
        entity = json.loads(http(f"{box.url}/v1/entities", token=TOKEN)[1])["entities"][0]["id"]
        request = {"model": entity, "input": "import subprocess\nsubprocess.run(['sleep', '30'])\nprint('late')",
                   "metadata": {"entity_id": entity}}
        outcome: dict[str, object] = {}

        def call():
            try:
                outcome["status"] = http(f"{box.url}/v1/responses", request, token=TOKEN, timeout=40)[0]
            except Exception as error:  # the connection closes under it: that is the point
                outcome["error"] = repr(error)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        # Wait until the sandbox runs it: its `sleep 30` appears (spare children exist before any request).
        deadline = time.monotonic() + 20
        while True:
            top = podman("top", name, "args", check=False).stdout
            if "sleep 30" in top:
                break
            assert time.monotonic() < deadline, (top, box.logs())
            time.sleep(0.1)
        start = time.monotonic()
        podman("kill", "--signal", "TERM", name)
        exit_code = podman("wait", name, timeout=30).stdout.strip()
        elapsed = time.monotonic() - start
        REPORT["sigterm_stop_in_flight_seconds"] = round(elapsed, 2)
        say(f"SIGTERM with an execution in flight to stopped: {elapsed:.2f} s (exit code {exit_code})")
        caller.join(timeout=10)
        assert elapsed < STOP_LIMIT, box.logs()
        assert exit_code != "137", "killed by SIGKILL, not stopped by SIGTERM"
        assert outcome.get("status") != 200 or "late" not in str(outcome), outcome
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
