"""Escape attempts against every usable sandbox back end.

Each attack asserts that the attempt failed and that the sandbox still runs `print(1)` afterwards. Attack code
prints `ESCAPED` on stdout when a step that must fail succeeds. An attack that succeeds against a back end is
marked `xfail(strict=True)` for that back end, with the finding as its reason, until the back end is fixed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

import local_code_interpreter
from local_code_interpreter.sandbox import BACKENDS, TIMEOUT_EXIT_CODE, Limits, create_sandbox, report_all

from host_processes import CHAIN, alive, descendants, eventually, processes_in

BASE = Limits(timeout_seconds=10, memory_mb=256, max_output_bytes=4096, scratch_mb=4, max_processes=16)
SHORT = replace(BASE, timeout_seconds=2)
HANG_GUARD = 120  # seconds: a run that takes this long means the sandbox hangs, not that the machine is slow
REPO = Path(local_code_interpreter.__file__).resolve().parents[2]
SERVER_PID = os.getpid()
CANARY = "LCI_ATTACK_CANARY"


class Lab:
    """One event loop, the secrets the attacks go after, and one sandbox per (back end, limits)."""

    def __init__(self, root: Path):
        self.root = root
        self.secret = secrets.token_hex(16)
        self.secret_file = root / "secret.txt"
        self.secret_file.write_text(self.secret)
        self.token = secrets.token_hex(16)
        self.token_file = root / "azure-identity-token"
        self.token_file.write_text(self.token)
        for path in (self.secret_file, self.token_file):
            path.chmod(0o644)
        root.chmod(0o777)  # only the sandbox, not file permissions, may stop the attacks
        self.canary = secrets.token_hex(16)
        self.loop = asyncio.new_event_loop()
        self.sandboxes = {}
        self.reports = {r.name: r for r in report_all(BASE)}

    def sandbox(self, backend: str, limits: Limits):
        if (backend, limits) not in self.sandboxes:
            sandbox = self.sandboxes[backend, limits] = create_sandbox(backend, limits)
            self.wait(sandbox.run("print(1)"))  # warm: its server or pool is up before any attack counts processes
        return self.sandboxes[backend, limits]

    def wait(self, awaitable):
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, HANG_GUARD))

    def run(self, backend: str, code: str, limits: Limits = BASE):
        return self.wait(self.sandbox(backend, limits).run(code))

    def attack(self, backend: str, code: str, limits: Limits = BASE):
        """Run `code`, check the sandbox still works, and return the attack's result."""
        result = self.run(backend, code, limits)
        after = self.run(backend, "print(1)", limits)
        assert (after.stdout, after.exit_code) == ("1\n", 0), f"unhealthy after attack: {after}"
        for leak in (self.secret, self.token, self.canary):
            assert leak not in result.stdout + result.stderr
        return result

    def close(self):
        for sandbox in self.sandboxes.values():
            self.loop.run_until_complete(sandbox.close())
        self.loop.close()


@pytest.fixture(scope="module")
def lab():
    root = Path(tempfile.mkdtemp(prefix="lci-attack-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as env:
        lab = Lab(root)
        env.setenv(CANARY, lab.canary)  # set before any sandbox starts
        env.setenv("AZURE_FEDERATED_TOKEN_FILE", str(lab.token_file))
        try:
            yield lab
        finally:
            lab.close()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=list(BACKENDS))
def backend(request, lab):
    report = lab.reports[request.param]
    if not report.usable:
        pytest.skip(f"{request.param} is not usable here: {report.detail[:160]}")
    return request.param


def known_gap(request, backend: str, gaps: dict[str, str]) -> None:
    """Mark this case xfail(strict) for a back end where the attack is known to succeed."""
    if backend in gaps:
        request.applymarker(pytest.mark.xfail(strict=True, reason=gaps[backend]))


def escaped(result) -> list[str]:
    return re.findall(r"ESCAPED.*", result.stdout)


# Secrets and the server's state ----------------------------------------------------------------------
def test_read_secret_file(lab, backend):
    code = f"""
import os
for how, path in (("direct", {str(lab.secret_file)!r}), ("symlink", "link"), ("hardlink", "hard")):
    try:
        if how == "symlink":
            os.symlink({str(lab.secret_file)!r}, path)
        if how == "hardlink":
            os.link({str(lab.secret_file)!r}, path)
        print("ESCAPED", how, open(path).read())
    except Exception as error:
        print("denied", how, type(error).__name__)
"""
    assert escaped(lab.attack(backend, code)) == []


def test_read_workload_identity_token(lab, backend):
    code = f"""
import os
paths = [os.environ.get("AZURE_FEDERATED_TOKEN_FILE"), {str(lab.token_file)!r},
         "/var/run/secrets/azure/tokens/azure-identity-token", "/var/run/secrets/kubernetes.io/serviceaccount/token"]
for path in paths:
    try:
        print("ESCAPED", path, open(path).read())
    except Exception as error:
        print("denied", path, type(error).__name__)
"""
    assert escaped(lab.attack(backend, code)) == []


def test_server_environment_is_not_inherited(lab, backend):
    result = lab.attack(backend, "import os\nprint(dict(os.environ))")
    assert CANARY not in result.stdout and "AZURE_FEDERATED_TOKEN_FILE" not in result.stdout


def test_read_environment_through_proc(lab, backend):
    code = f"""
import os
pids = [{SERVER_PID}, os.getppid(), 1, "self"]
for pid in pids:
    for name in ("environ", "cmdline", "mem", "maps", "cwd/pyproject.toml", "root/{lab.secret_file}"):
        try:
            data = open(f"/proc/{{pid}}/{{name}}", "rb").read(4096)
            print("ESCAPED" if pid != "self" else "own", pid, name, data)
        except Exception as error:
            print("denied", pid, name, type(error).__name__)
"""
    result = lab.attack(backend, code)
    assert escaped(result) == []


def test_read_server_source_files(lab, backend):
    code = f"""
import os
for path in [{str(REPO / "pyproject.toml")!r}, {local_code_interpreter.__file__!r}, "/etc/shadow", "/root/.bashrc"]:
    try:
        print("ESCAPED", path, open(path).read(100))
    except Exception as error:
        print("denied", path, type(error).__name__)
try:
    print("listing", os.listdir({str(REPO)!r}))
except Exception as error:
    print("denied listing", type(error).__name__)
"""
    result = lab.attack(backend, code)
    assert escaped(result) == []
    assert "pyproject.toml" not in result.stdout.split("listing", 1)[-1]


def test_no_inherited_file_descriptors(lab, backend):
    """Only the child's own cell protocol pipes (3 in, 4 out) may be open beyond stdin/stdout/stderr."""
    code = """
import os, stat
for fd in range(3, 1024):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        continue
    if fd in (3, 4) and stat.S_ISFIFO(mode):
        continue
    print("ESCAPED fd", fd, oct(mode))
"""
    assert escaped(lab.attack(backend, code)) == []


# Writes, disk --------------------------------------------------------------------------------------------
def test_write_outside_scratch(lab, backend):
    name = f"lci-attack-{secrets.token_hex(4)}"
    targets = [lab.root / name, Path("/tmp") / name, REPO / name, Path("/dev/shm") / name, Path("/var/tmp") / name,
               lab.secret_file]
    code = f"""
for path in {[str(t) for t in targets]!r}:
    try:
        with open(path, "a") as f:
            f.write("pwned")
        print("ESCAPED", path)
    except Exception as error:
        print("denied", path, type(error).__name__)
"""
    try:
        result = lab.attack(backend, code)
        assert escaped(result) == []
        assert [t for t in targets[:-1] if t.exists()] == []
        assert lab.secret_file.read_text() == lab.secret
    finally:
        for target in targets[:-1]:
            target.unlink(missing_ok=True)


def test_large_file_write_is_capped(lab, backend):
    code = """
written = 0
with open("big", "wb") as f:
    for _ in range(64):
        f.write(b"x" * 2**20)
        f.flush()
        written += 2**20
print("ESCAPED wrote", written)
"""
    result = lab.attack(backend, code)
    assert escaped(result) == [] and result.exit_code != 0


@pytest.mark.parametrize("delay", [0, 0.5], ids=["at-once", "after-several-checks"])
def test_scratch_total_size_is_capped(lab, backend, delay):
    code = f"""
import time
time.sleep({delay})  # later: the quota is checked again and again while the cell runs, not only once
for n in range(200):
    with open(f"part{{n}}", "wb") as f:
        f.write(b"x" * 2**20)  # each file under the per-file cap, 200 MiB in all against scratch_mb=4
    time.sleep(0.01)
print("ESCAPED wrote 200 MiB")
"""
    result = lab.attack(backend, code)
    assert escaped(result) == [] and result.exit_code != 0 and not result.timed_out


# Network and IPC ---------------------------------------------------------------------------------------------
def test_tcp_connect_to_loopback(lab, backend):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"""
import socket
try:
    s = socket.socket()
    s.settimeout(3)
    s.connect(("127.0.0.1", {port}))  # a numeric address: no name resolution to fail first
    s.sendall(b"pwned")
    print("ESCAPED connected")
except Exception as error:
    print("denied", type(error).__name__, error)
"""
        assert escaped(lab.attack(backend, code)) == []
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_udp_to_loopback(lab, backend):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        code = f"""
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"pwned", ("127.0.0.1", {listener.getsockname()[1]}))
    print("sent")
except Exception as error:
    print("denied", type(error).__name__, error)
"""
        lab.attack(backend, code)
        with pytest.raises(BlockingIOError):
            listener.recvfrom(100)


def test_tcp_bind(lab, backend):
    code = """
import socket
for port in (0, 18765):
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        print("ESCAPED bound", s.getsockname())
    except Exception as error:
        print("denied", port, type(error).__name__)
"""
    assert escaped(lab.attack(backend, code)) == []


def test_abstract_unix_socket_to_the_server(lab, backend):
    name = f"\0lci-attack-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen()
        listener.setblocking(False)
        code = f"""
import socket
try:
    socket.socket(socket.AF_UNIX).connect({name!r})
    print("ESCAPED connected")
except Exception as error:
    print("denied", type(error).__name__)
"""
        assert escaped(lab.attack(backend, code)) == []
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_pathname_unix_socket_of_the_server(lab, backend):
    path = lab.root / "server.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen()
        listener.setblocking(False)
        code = f"""
import socket
try:
    socket.socket(socket.AF_UNIX).connect({str(path)!r})
    print("connected")
except Exception as error:
    print("denied", type(error).__name__)
"""
        try:
            lab.attack(backend, code)
            with pytest.raises(BlockingIOError):
                listener.accept()
        finally:
            path.unlink(missing_ok=True)


# Processes and signals -----------------------------------------------------------------------------------------
def test_signal_the_server(lab, backend):
    code = f"""
import os, signal
# In its own PID namespace the child is pid 1 and its parent is out of sight (getppid() == 0): neither is a target.
for pid in {{os.getppid(), {SERVER_PID}, 1}} - {{0, os.getpid()}}:
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            print("ESCAPED signalled", pid, sig)
        except Exception as error:
            print("denied", pid, sig, type(error).__name__)
try:
    os.killpg(os.getpgid({SERVER_PID}), signal.SIGKILL)
    print("ESCAPED killed the server's group")
except Exception as error:
    print("denied group", type(error).__name__)
"""
    servers = _servers()
    assert escaped(lab.attack(backend, code)) == []
    assert servers <= _servers(), "a fork server or worker was killed"


def survivors(before: set[int]) -> set[int]:
    """Processes below the test process that were not there `before`, other than spare children (a back end's
    children forked ahead of requests: a direct child of a server process, with no child of its own)."""
    servers = _servers()
    return {pid for pid in descendants(SERVER_PID) - before
            if pid not in servers and (_ppid(pid) not in servers or descendants(pid))}


def _servers() -> set[int]:
    """Direct children of the test process: the fork server or worker pool the sandboxes keep."""
    return {pid for pid in descendants(SERVER_PID) if _ppid(pid) == SERVER_PID}


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_ptrace_and_process_vm_readv_of_the_parent(lab, backend):
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for pid in (os.getppid(), {SERVER_PID}):
    if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
        print("ESCAPED attached", pid)
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    remote = (ctypes.c_void_p * 2)(0x10000, 8)
    n = libc.process_vm_readv(pid, local, 1, remote, 1, 0)
    if n >= 0 or ctypes.get_errno() == 14:  # EFAULT: the permission check passed
        print("ESCAPED process_vm_readv", pid)
print("done")
"""
    assert escaped(lab.attack(backend, code)) == []


def test_privilege_escalation_with_ctypes(lab, backend):
    code = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.setuid(0) == 0 or os.geteuid() == 0:
    print("ESCAPED uid 0")
if libc.prctl(39, 0, 0, 0, 0) != 1:  # PR_GET_NO_NEW_PRIVS
    print("ESCAPED no_new_privs is off")
if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: still confined by Landlock inside
    try:
        print("ESCAPED from a user namespace", open({str(lab.secret_file)!r}).read())
    except OSError as error:
        print("denied in namespace", type(error).__name__)
print("done")
"""
    assert escaped(lab.attack(backend, code)) == []


def test_user_namespace_is_refused(lab, backend):
    code = """
import ctypes
if ctypes.CDLL(None).unshare(0x10000000) == 0:  # CLONE_NEWUSER
    print("ESCAPED created a user namespace")
"""
    assert escaped(lab.attack(backend, code)) == []


def test_the_templates_own_clone_flags_make_no_namespace(lab, backend):
    """The template's seccomp filter, which its children inherit, lets `clone` through with exactly the template's
    own namespace flags (its fork): a child, as `nobody` without capabilities, is refused them by the kernel."""
    code = """
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
number = {"x86_64": 56, "aarch64": 220}[platform.machine()]
for flags in (0x20000000 | 0x08000000, 0x20000000, 0x08000000):  # NEWPID|NEWIPC, each alone; SIGCHLD
    pid = libc.syscall(number, ctypes.c_ulong(flags | 17), None, None, None, None)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        print("ESCAPED cloned into new namespaces", hex(flags))
    else:
        print("refused", hex(flags), os.strerror(ctypes.get_errno()))
"""
    result = lab.attack(backend, code)
    assert escaped(result) == []
    if backend == "subprocess":
        assert result.stdout.count("refused") == 3, result.stdout + result.stderr


def test_no_new_privs_and_setuid_binary(lab, backend):
    setuid_id = lab.root / "setuid-id"
    shutil.copy("/usr/bin/id", setuid_id)
    setuid_id.chmod(0o4755)
    code = f"""
import subprocess
try:
    status = open("/proc/self/status").read()
    print("nnp", [line for line in status.splitlines() if line.startswith("NoNewPrivs")])
    if "NoNewPrivs:\\t1" not in status:
        print("ESCAPED no_new_privs is off")
except OSError as error:
    print("status denied", type(error).__name__)
for binary in ({str(setuid_id)!r}, "/usr/bin/su"):
    try:
        out = subprocess.run([binary, "-u"] if binary.endswith("id") else [binary, "-c", "id -u"],
                             capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        if out.stdout.strip() == "0":
            print("ESCAPED root through", binary)
        print("ran", binary, out.returncode, out.stdout.strip())
    except Exception as error:
        print("denied", binary, type(error).__name__)
"""
    try:
        assert escaped(lab.attack(backend, code)) == []
    finally:
        setuid_id.unlink()


def test_fork_bomb(lab, backend):
    code = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    lab.sandbox(backend, SHORT)
    before = descendants(SERVER_PID)
    result = lab.attack(backend, code, SHORT)
    assert result.exit_code != 0
    assert eventually(lambda: survivors(before) == set()), "fork bomb processes survived"
    assert subprocess.run(["true"]).returncode == 0  # the machine can still fork


def test_memory_bomb(lab, backend):
    code = """
hog = []
while True:
    hog.append("x" * (16 * 2**20))
"""
    result = lab.attack(backend, code, SHORT)
    assert result.exit_code != 0
    assert result.timed_out or "Memory" in result.stderr


def test_memory_bomb_across_processes(lab, backend):
    """RLIMIT_AS bounds each process; the per-execution quota bounds them together (held for a second here:
    it is checked every 0.1 s, so only a burst shorter than that can pass)."""
    code = """
import time
import os
ready_r, ready_w = os.pipe()
hold_r, hold_w = os.pipe()
for _ in range(6):
    if os.fork() == 0:
        hog = bytearray(64 * 2**20)  # zero pages: touch them so they are resident
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        os.write(ready_w, b"+")
        os.read(hold_r, 1)
        os._exit(0)
os.close(ready_w)
held = 0
while os.read(ready_r, 1):
    held += 1
    if held == 6:
        break
time.sleep(1)
os.close(hold_w)
print("held", held)
if held * 64 > 128:
    print("ESCAPED", held, "processes held 64 MiB each at once")
"""
    assert escaped(lab.attack(backend, code, replace(SHORT, memory_mb=128))) == []


def test_infinite_loop_times_out(lab, backend):
    result = lab.attack(backend, "while True:\n    pass", SHORT)
    assert (result.exit_code, result.timed_out) == (TIMEOUT_EXIT_CODE, True)


def test_sleep_past_the_timeout(lab, backend):
    result = lab.attack(backend, "import time\ntime.sleep(60)\nprint('ESCAPED woke up')", SHORT)
    assert escaped(result) == [] and result.exit_code != 0


def test_child_that_outlives_the_timeout(lab, backend):
    marker = lab.root / f"marker-{secrets.token_hex(4)}"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print("escapee", os.readlink("/proc/self"), flush=True)  # the pid as the host sees it
        time.sleep(2.5)
        open({str(marker)!r}, "w").write("alive")
        print("ESCAPED the grandchild survived", flush=True)
    os._exit(0)
time.sleep(60)
"""
    result = lab.attack(backend, code, SHORT)
    assert result.exit_code != 0 and escaped(result) == []
    pids = [int(p) for p in re.findall(r"escapee (\d+)", result.stdout)]
    assert eventually(lambda: not any(alive(pid) for pid in pids)), f"escapees {pids} still run"
    if pids:
        time.sleep(1.5)  # past the moment the escapee would have written
    assert not marker.exists()


def test_background_processes_after_normal_exit(lab, backend):
    code = """
import os, subprocess, sys, time
# Pids as the host sees them (/proc/self is the host's view even from a PID namespace).
same_group = subprocess.Popen([sys.executable, "-c", "import os, time; print(os.readlink('/proc/self'), flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
print("escapee", same_group.stdout.readline().strip())
ready_r, ready_w = os.pipe()
if (child := os.fork()) == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(ready_w, os.readlink("/proc/self").encode())
        time.sleep(60)
        os._exit(0)
    os._exit(0)
os.waitpid(child, 0)
print("escapee", os.read(ready_r, 20).decode(), flush=True)
"""
    result = lab.attack(backend, code)
    pids = [int(p) for p in re.findall(r"escapee (\d+)", result.stdout)]
    if backend == "subprocess":  # both started (the interpreter can start itself: a venv's pyvenv.cfg is readable)
        assert len(pids) == 2, result
    assert eventually(lambda: not any(alive(pid) for pid in pids)), f"left behind: {pids}"


def test_other_execution_is_out_of_reach(lab, backend):
    victim = lab.loop.create_task(lab.sandbox(backend, SHORT).run(
        "import time\nopen('mine.txt', 'w').write('victim-secret')\ntime.sleep(60)"))

    def victim_process():  # (it may run in a child forked before the request: a spare)
        lab.loop.run_until_complete(asyncio.sleep(0.05))
        return victim.done() or any(_in_scratch(pid) for pid in descendants(SERVER_PID))

    assert eventually(victim_process)
    found = [pid for pid in descendants(SERVER_PID) if _in_scratch(pid)]
    if not found:
        lab.wait(victim)
        pytest.skip(f"{backend} runs no process per execution to attack")
    pid, cwd = found[0], os.readlink(f"/proc/{found[0]}/cwd")
    code = f"""
import os, signal
try:
    print("ESCAPED read", open({cwd + "/mine.txt"!r}).read())
except Exception as error:
    print("denied read", type(error).__name__)
try:
    os.kill({pid}, signal.SIGKILL)
    print("ESCAPED killed", {pid})
except Exception as error:
    print("denied kill", type(error).__name__)
try:
    os.kill(-1, signal.SIGKILL)  # returns 0 even when every signal is refused: the victim's fate tells
except Exception as error:
    print("denied kill(-1)", type(error).__name__)
"""
    result = lab.attack(backend, code)
    assert escaped(result) == [] and "victim-secret" not in result.stdout
    assert lab.wait(victim).timed_out  # ended by its own deadline, not by the attacker


def _in_scratch(pid: int) -> bool:
    """Whether `pid` is the victim: in a sandbox scratch directory holding its file (a spare child has none)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        return "lci-sandbox-" in cwd and os.path.exists(os.path.join(cwd, "mine.txt"))
    except OSError:
        return False


# Output --------------------------------------------------------------------------------------------------------
def test_flood_stdout_and_stderr(lab, backend):
    code = """
import sys
while True:
    print("o" * 8192)
    print("e" * 8192, file=sys.stderr)
"""
    result = lab.attack(backend, code, SHORT)
    assert result.truncated
    for stream in (result.stdout, result.stderr):
        assert len(stream) <= SHORT.max_output_bytes + 300 and "truncated" in stream


def test_huge_single_write(lab, backend):
    result = lab.attack(backend, "print('x' * 50_000_000)")
    assert result.truncated and len(result.stdout) <= BASE.max_output_bytes + 300


def test_binary_output_is_decoded_safely(lab, backend):
    code = """
import sys
try:
    sys.stdout.buffer.write(b"\\xff\\xfe\\x80 abc \\xc3\\n")
except Exception:
    print("\\udcff abc")
"""
    result = lab.attack(backend, code)
    assert "abc" in result.stdout
    result.stdout.encode("utf-8")  # valid text: no lone surrogate reaches the caller


def test_too_many_open_files(lab, backend):
    few = replace(BASE, max_open_files=16)
    code = """
import os
fds = []
try:
    while len(fds) < 10000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as error:
    print("stopped", type(error).__name__)
print("opened", len(fds))
"""
    result = lab.attack(backend, code, few)
    opened = [int(n) for n in re.findall(r"opened (\d+)", result.stdout)]
    assert all(n < few.max_open_files for n in opened)


def test_deep_recursion(lab, backend):
    plain = lab.attack(backend, "def f(n):\n    return f(n + 1)\nf(0)")
    assert plain.exit_code != 0 and "Recursion" in plain.stderr
    code = "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)"
    raised = lab.attack(backend, code, SHORT)
    assert raised.exit_code != 0


# Neighbours: other executions, before and beside this one ---------------------------------------------------
MARK = "LCI-MARK-"


def test_other_executions_data_is_not_in_inherited_memory(lab, backend):
    """An earlier execution's code and output, and a concurrent one's, are nowhere in the attacker's memory."""
    earlier, earlier_out, beside, beside_out = (MARK + secrets.token_hex(8) for _ in range(4))
    lab.run(backend, f"code_marker = {earlier!r}\nprint({earlier_out!r})")
    victim = lab.loop.create_task(lab.sandbox(backend, BASE).run(
        f"import time\nsecret = {beside!r}\nprint({beside_out!r}, flush=True)\ntime.sleep(4)"))
    lab.loop.run_until_complete(asyncio.sleep(1))  # the victim runs (its output is in flight) while we look
    code = """
import gc, re, sys
pattern = re.compile(("LCI" + "-MARK-" + "[0-9a-f]{16}").encode())
found = set()
def look(value):
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if isinstance(value, (bytes, bytearray, memoryview)):
        found.update(m.decode() for m in pattern.findall(bytes(value)))
for obj in gc.get_objects():
    look(obj)
    try:
        for item in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set)) else ()):
            look(item)
        if isinstance(obj, dict):
            for key in obj:
                look(key)
    except Exception:
        pass
for module in list(sys.modules.values()):
    for value in list(getattr(module, "__dict__", {}).values()):
        look(value)
for marker in sorted(found):
    print("ESCAPED found", marker)
print("scanned")
"""
    result = lab.attack(backend, code)
    lab.wait(victim)
    assert escaped(result) == []
    if backend == "subprocess":
        assert "scanned" in result.stdout, result.stderr


def test_system_v_ipc_and_keyrings(lab, backend):
    """No System V shared memory, queue or semaphore, and no keyring, to leave data in for the next execution."""
    from local_code_interpreter.sandbox.seccomp import _ARCHES

    numbers = _ARCHES.get(os.uname().machine, (0, {}))[1]
    key = 0x4C4300 + secrets.randbelow(255)
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
IPC_CREAT = 0o1000
for name, call in (("shmget", lambda: libc.shmget({key}, 1 << 20, IPC_CREAT | 0o666)),
                   ("msgget", lambda: libc.msgget({key}, IPC_CREAT | 0o666)),
                   ("semget", lambda: libc.semget({key}, 1, IPC_CREAT | 0o666)),
                   ("add_key", lambda: libc.syscall({numbers.get("add_key", -1)}, b"user", b"lci", b"left-behind",
                                                     11, ctypes.c_int(-4))),  # KEY_SPEC_USER_KEYRING
                   ("keyctl", lambda: libc.syscall({numbers.get("keyctl", -1)}, 0, ctypes.c_int(-4), 0))):
    if call() >= 0:
        print("ESCAPED", name)
    else:
        print("denied", name, ctypes.get_errno())
"""
    result = lab.attack(backend, code)
    assert escaped(result) == []
    for table in ("shm", "msg", "sem"):
        with open(f"/proc/sysvipc/{table}") as f:
            assert f"{key:x}" not in f.read().lower() and str(key) not in f.read()


def test_seccomp_denies_what_container_runtimes_deny(lab, backend):
    """System calls Docker's and containerd's default profiles deny fail here too (run as the sandbox user,
    several would work without the filter: keyctl, personality, memfd_create, userfaultfd, unshare)."""
    from local_code_interpreter.sandbox.seccomp import _ARCHES

    numbers = _ARCHES.get(os.uname().machine, (0, {}))[1]
    if not numbers:
        pytest.skip(f"no syscall table for {os.uname().machine}")
    calls = {  # name: arguments (harmless if the call went through)
        "keyctl": (0, -4, 0), "add_key": (0, 0, 0, 0, -4), "request_key": (0, 0, 0, 0),
        "userfaultfd": (0,), "bpf": (0, 0, 0), "perf_event_open": (0, 0, -1, -1, 0), "memfd_create": ("b'x'", 0),
        "ptrace": (0, 0, 0, 0), "mount": (0, 0, 0, 0, 0), "umount2": ("b'/tmp'", 0), "pivot_root": (0, 0),
        "unshare": (0x08000000,), "setns": (-1, 0), "kexec_load": (0, 0, 0, 0), "init_module": (0, 0, 0),
        "finit_module": (-1, 0, 0), "delete_module": ("b'x'", 0), "personality": (0x0400000,),
        "shmget": (0, 4096, 0o1600), "open_by_handle_at": (-1, 0, 0), "fsopen": ("b'tmpfs'", 0),
        "io_uring_setup": (1, 0), "process_vm_readv": (1, 0, 0, 0, 0, 0), "syslog": (3, 0, 0),
    }
    lines = "\n".join(f"check({name!r}, {numbers[name]}, {', '.join(map(str, args))})"
                      for name, args in calls.items() if name in numbers)
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def check(name, number, *args):
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    if libc.syscall(number, *args) >= 0:
        print("ESCAPED", name)
    else:
        print("denied", name, ctypes.get_errno())
{lines}
"""
    result = lab.attack(backend, code)
    assert escaped(result) == []
    if backend == "subprocess":
        denied = dict(re.findall(r"denied (\w+) (\d+)", result.stdout))
        assert set(denied) == {name for name in calls if name in numbers}, result.stdout + result.stderr
        assert denied["memfd_create"] == str(38) and denied["userfaultfd"] == str(38)  # ENOSYS: the filter's
        assert denied["keyctl"] == str(1) and denied["personality"] == str(1)  # EPERM: the filter's


def test_fork_successor_chain_dies_with_its_execution(lab, backend):
    """A chain of processes that forks a successor whenever one is killed ends with its execution."""
    result = lab.attack(backend, 'import os\nprint("directory", os.getcwd(), flush=True)\n' + CHAIN)
    directories = [d for d in re.findall(r"directory (\S+)", result.stdout) if "lci-sandbox-" in d]
    if "chain started" not in result.stdout or not directories:
        pytest.skip(f"{backend} runs no processes: {result.stderr[-200:]}")
    assert eventually(lambda: processes_in(directories[:1]) == []), processes_in(directories[:1])
