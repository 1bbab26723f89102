"""The pristine template: the process every confined child is forked from. It only forks and reaps.

Run as `python -s -P -m local_code_interpreter.sandbox.template FD [--lean BYTES]` with an environment of only its
allocator settings (`supervisor.TEMPLATE_ENV`); `--lean` warms the standard library only (`startup.py` says
which children are forked from which), BYTES being the warm template's address space. It pins the numeric
libraries to one thread (a multi-threaded process cannot fork safely), calls `child.prepare()` once (warm
imports: NumPy, pandas, matplotlib with Agg, ...), takes malloc's holes in its warm heap (`heap.py`: it stays on
huge pages while it forks), opens the Landlock base rules once (and, before each fork, builds that child's
ruleset: `landlock.ruleset`), attaches the children's seccomp filter to itself (they inherit it:
`_filter_children`), and then serves only these requests on the SOCK_SEQPACKET socket FD (one JSON object per
message):

  {"op": "fork", "id", "limits", "session"} + five descriptors by SCM_RIGHTS (the child's scratch directory,
      its cell pipe's read end, its result pipe's write end, its stdout and stderr pipes' write ends)
      -> {"op": "forked", "id", "pid"} | {"op": "failed", "id", "error"}
  {"op": "kill", "pid"} / {"op": "interrupt", "pid"}     (SIGKILL to the child's whole tree / SIGINT to it)
  and on its own: {"op": "exited", "pid", "status"}       (the child and everything it started are gone)
                  {"op": "stopping"}                      (it ends its children now: SIGTERM, or the socket's end)
                  {"op": "hidden_tasks", "uid", "count"}  (tasks of the children's uid it cannot see, changed:
                                                           `tasks.py`; the hello says the first count)

It never receives code, input, output or files: those flow between the supervisor and the child on the
child's own pipes, which the template closes right after the fork. So no child can find another execution's
data in the memory it inherits, whether that execution ran before it or runs beside it.

Each child is cloned into its own PID and IPC namespaces when the host allows it (root): killing its init
ends every process of the execution at once (a fork-successor chain included), and System V objects die
with it. Otherwise the child gets its own session and process group, and the template, a child subreaper,
freezes (SIGSTOP) then kills whatever leaves them. The template dies with its parent (PDEATHSIG), every child
with the template (PDEATHSIG SIGKILL), and on SIGTERM or the control socket's end it kills its whole tree.
"""

from __future__ import annotations

import _signal as _handlers  # the C half of `signal`, without its enum wrapping (see _CHILD_HANDLERS)
import ctypes
import functools
import json
import os
import select
import signal
import socket
import sys
import time

from . import child, heap, isolation, landlock, quota, seccomp, tasks
from .libc import LIBC
from .types import Limits

CHILD_FDS = ("scratch", "cells", "results", "stdout", "stderr")
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_CLONE_NEWIPC, _CLONE_NEWPID = 0x08000000, 0x20000000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
_SWEEP_SECONDS = 0.05
# RLIMIT_NPROC counts every task of the uid, and is set when a child is forked: a session lives on while other
# executions and sessions start, so its limit gets this headroom over the count at its fork, and the supervisor
# bounds its own processes to `max_processes` by counting them (a one-shot run keeps the tight limit).
SESSION_NPROC_HEADROOM = 512
_MESSAGE = 65536
_ANCILLARY = socket.CMSG_SPACE(len(CHILD_FDS) * 4)  # room for the descriptors of one fork request
_SCAN = json.JSONDecoder().scan_once  # the C scanner json.loads ends in, without the steps around it
_PY = ctypes.PyDLL(None, use_errno=True)  # calls made with the GIL held: nothing runs between clone and fix-up
_PY.syscall.restype = ctypes.c_long
_PY.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong] + [ctypes.c_void_p] * 4
_CLONE_NUMBER = _SYS_CLONE.get(os.uname().machine, -1)
_SIGCHLD = int(signal.SIGCHLD)
# A new child's handlers, set through the C module with plain ints: `signal.signal` turns each previous handler
# into an enum member, and that machinery is about 30 pages a fresh child would copy for nothing. SIGINT is not
# among them: `child.serve` installs its own handler first thing (until then the template's SIG_IGN holds).
_CHILD_HANDLERS = ((_handlers.SIGCHLD, _handlers.SIG_DFL), (_handlers.SIGTERM, _handlers.SIG_DFL))


def clone(flags: int) -> int:
    """fork(), plus namespace flags: a raw clone(2) wrapped in CPython's own before/after-fork steps."""
    if not flags:
        return os.fork()
    _PY.PyOS_BeforeFork()
    pid = _PY.syscall(_CLONE_NUMBER, flags | _SIGCHLD, None, None, None, None)
    if pid == 0:
        _PY.PyOS_AfterFork_Child()
        return 0
    _PY.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone failed")
    return pid


def namespace_flags() -> tuple[int, str]:
    """The namespace flags this host lets the template use, and why (not), tried in a short-lived child."""
    if os.uname().machine not in _SYS_CLONE:
        return 0, f"no clone(2) wrapper for {os.uname().machine}"
    flags = _CLONE_NEWPID | _CLONE_NEWIPC
    try:
        pid = clone(flags)
    except OSError as error:
        return 0, f"clone(CLONE_NEWPID|CLONE_NEWIPC) refused: {os.strerror(error.errno)} (needs root)"
    if pid == 0:
        os._exit(0 if os.getpid() == 1 else 1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return 0, "clone(CLONE_NEWPID) did not make the child its namespace's init"
    return flags, "own PID and IPC namespaces per execution"


class Template:
    def __init__(self, control: socket.socket, heap_detail: str = "", address_floor: int = 0):
        self.control = control
        self.heap_detail = heap_detail
        self.pid = os.getpid()
        self.flags, self.namespace_detail = namespace_flags()
        self.landlock_abi = landlock.abi_version()
        # Above the numbers a child takes for its own pipes (0-4) and the received ones: they must survive both.
        self.rules = [(_above(fd, 64), access) for fd, access in isolation.landlock_rules(self.landlock_abi)]
        # A child's address space limit is this plus its memory limit. A lean template's children may raise theirs
        # (soft) up to the warm template's size plus the limit (hard) when they first import a library
        # (`child._LibraryImports`), so they have as much left for their data as a warm template's child.
        self.vm_size = _vm_size()
        self.address_floor = max(self.vm_size, address_floor)
        self.children: dict[int, str] = {}  # live (unreaped) child pid -> request id
        self.budget_cache = (0.0, 0)
        # Tasks of the children's uid that the kernel counts against their process limit but this PID namespace
        # does not show (other containers running as the same user: `tasks.py`), asked again in the background.
        self.uid = isolation.NOBODY if isolation.drops_root() else os.geteuid()
        self.hidden = 0
        self.probe: tasks.Probe | None = None
        self.probe_at = 0.0
        self.sweep_at: float | None = None
        self.filtered, self.filter_detail = _filter_children(self.flags)  # last: what comes after runs under it

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.epoll()
        poller.register(wake_r, select.EPOLLIN)
        control = self.control.fileno()
        poller.register(control, select.EPOLLIN)
        hidden: int | None = 0
        if tasks.can_hide():  # before the first fork: its limit counts them too
            first = tasks.Probe(self.uid, isolation.drops_root())
            hidden = first.result()
            os.waitpid(first.pid, 0)
            self.hidden = max(hidden or 0, 0)
            self.probe_at = time.monotonic() + tasks.PROBE_SECONDS
        else:
            self.probe_at = float("inf")
        self._send({"op": "hello", "pid_namespace": bool(self.flags), "namespace_detail": self.namespace_detail,
                    "vm_size": self.vm_size, "landlock_abi": self.landlock_abi, "heap": self.heap_detail,
                    "seccomp": self.filter_detail, "uid": self.uid, "hidden_tasks": hidden})
        try:
            while True:
                due = min(self.probe_at if self.probe is None else float("inf"),
                          float("inf") if self.sweep_at is None else self.sweep_at)
                timeout = max(0.0, due - time.monotonic()) if due != float("inf") else -1
                for fd, _ in poller.poll(timeout):
                    if fd == control and not self._read_control():
                        return
                    if fd == wake_r:
                        _drain(wake_r)
                        self._reap()
                    if self.probe is not None and fd == self.probe.fd:
                        poller.unregister(fd)
                        self._probed()
                if self.sweep_at is not None and time.monotonic() >= self.sweep_at:
                    self._sweep()
                if self.probe is None and time.monotonic() >= self.probe_at:
                    self.probe = tasks.Probe(self.uid, isolation.drops_root())
                    poller.register(self.probe.fd, select.EPOLLIN)
        finally:
            poller.close()
            self.stop()

    def _probed(self) -> None:
        """The background probe's answer: each child forked from now on counts the hidden tasks it found; the
        supervisor hears of a change (the probe's exit is reaped with the children's)."""
        probe, self.probe = self.probe, None
        found = probe.result()
        self.probe_at = time.monotonic() + tasks.PROBE_SECONDS
        if found is not None and found >= 0 and found != self.hidden:
            self.hidden = found
            self._send({"op": "hidden_tasks", "uid": self.uid, "count": found})

    def stop(self) -> None:
        """Kill every child and everything that left them, then reap. The supervisor hears it first: the exits
        that follow are the template's doing, not the children's."""
        # Stopping already: a SIGTERM from now on (the server's death signal, a group-wide one) must neither cut
        # the sweep short nor land in the interpreter's own shutdown (a traceback in the server's log).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._send({"op": "stopping"})
        for pid in list(self.children):
            _kill_group(pid)
        self._sweep(everything=True)
        deadline = time.monotonic() + 2
        while self.children and time.monotonic() < deadline:
            self._reap(block=True)

    def _send(self, message: dict) -> None:
        self._send_raw(json.dumps(message).encode())

    def _send_raw(self, data: bytes) -> None:
        try:
            self.control.send(data)
        except OSError:
            pass  # the supervisor went away: the control socket's end stops us next

    def _read_control(self) -> bool:
        try:
            data, ancillary, _, _ = self.control.recvmsg(_MESSAGE, _ANCILLARY)
        except (ConnectionResetError, BlockingIOError):
            return True
        fds = _descriptors(ancillary)
        if not data:
            for fd in fds:
                os.close(fd)
            return False  # the supervisor went away: so do we
        try:
            request = _decode(data)
            op = request["op"]
            if op == "fork":
                self._fork(request, fds)
            elif op in ("kill", "interrupt") and request["pid"] in self.children:
                if op == "kill":
                    _kill_group(request["pid"])
                else:
                    _signal(request["pid"], signal.SIGINT)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        return True

    def _fork(self, request: dict, fds: list[int]) -> None:
        if len(fds) != len(CHILD_FDS):
            self._send({"op": "failed", "id": request["id"], "error": f"expected {len(CHILD_FDS)} descriptors"})
            return
        limits = _limits(tuple(request["limits"].items()))
        budget = self._process_budget(limits) + (SESSION_NPROC_HEADROOM if request.get("session") else 0)
        address_space = (self.vm_size + limits.memory_mb * 1024 * 1024,
                         self.address_floor + limits.memory_mb * 1024 * 1024)
        given = dict(zip(CHILD_FDS, fds))
        ruleset = -1
        try:
            if self.landlock_abi > 0:  # above the numbers the child takes for its own pipes, as the rules are
                ruleset = _above(landlock.ruleset(self.landlock_abi, self.rules, given["scratch"]), 64)
            pid = clone(self.flags)
        except OSError as error:
            if ruleset >= 0:
                os.close(ruleset)
            self._send({"op": "failed", "id": request["id"], "error": f"fork failed: {error}"})
            return
        if pid == 0:
            _child(self.pid, given, limits, ruleset, budget, address_space, bool(request.get("session")),
                   self.filtered)
        if ruleset >= 0:
            os.close(ruleset)  # the child's alone
        self.children[pid] = request["id"]
        self._send_raw(b'{"op":"forked","id":%d,"pid":%d}' % (request["id"], pid))

    def _process_budget(self, limits: Limits) -> int:
        """RLIMIT_NPROC counts every task of the uid, so the budget is what it has now (those this PID namespace
        shows, and those it does not: `tasks.py`) plus the allowance."""
        checked, count = self.budget_cache
        if time.monotonic() - checked > 1.0:
            count = tasks.visible(self.uid)
            self.budget_cache = (time.monotonic(), count)
        return count + self.hidden + limits.max_processes

    def _reap(self, block: bool = False) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG))
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            tracked = pid in self.children
            if tracked:
                _kill_group(pid)  # before reaping: the group id cannot be reused yet
            _, status = os.waitpid(pid, 0)
            if tracked:
                del self.children[pid]
                self._send_raw(b'{"op":"exited","pid":%d,"status":%d}' % (pid, os.waitstatus_to_exitcode(status)))
                if not self.flags:
                    self.sweep_at = time.monotonic()
            block = False

    def _sweep(self, everything: bool = False) -> None:
        """Without PID namespaces: freeze, then kill, the processes that left a child's session and were
        reparented to us (we are subreaper), so a chain that forks a successor when killed cannot outrun us."""
        self.sweep_at = None
        live_sessions = set() if everything else set(self.children)  # a child leads its own session
        frozen: set[int] = set()
        while True:
            probe = self.probe.pid if self.probe is not None and not everything else None  # ours, not a leftover
            roots = [pid for pid in quota.children(self.pid) if everything or (
                pid not in self.children and pid != probe and quota.session_of(pid) not in live_sessions)]
            found = {pid for root in roots for pid in quota.tree(root)} - frozen
            if not found:
                break
            for pid in found:
                _signal(pid, signal.SIGSTOP)
            frozen |= found
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
        if frozen:
            self._reap()
            self.sweep_at = time.monotonic() + _SWEEP_SECONDS  # once more: nothing may have slipped through


def _child(template: int, fds: dict[str, int], limits: Limits, ruleset: int, budget: int,
           address_space: tuple[int, int], session: bool, filtered: bool) -> None:
    """In the new child: become its own session, take its descriptors, confine itself, serve cells."""
    status = 1
    try:
        _handlers.set_wakeup_fd(-1)
        for sig, handler in _CHILD_HANDLERS:
            _handlers.signal(sig, handler)
        os.setsid()
        high = {name: _above(fd, 16) for name, fd in fds.items()}  # out of the way of 0-4 first
        null = os.open("/dev/null", os.O_RDONLY)
        for fd, target in ((null, 0), (high["stdout"], 1), (high["stderr"], 2), (high["cells"], 3),
                           (high["results"], 4)):
            os.dup2(fd, target, inheritable=target < 3)  # the code's subprocesses get 0-2, never the cell pipes
        isolation.apply(high["scratch"], limits, ruleset, budget, address_space, session, template,
                        filter_inherited=filtered)
        status = child.serve(3, 4)  # on fresh line-buffered streams of its own (`child._own_streams`)
    except BaseException as error:  # the setup failed: say so on stderr, never run unconfined code
        try:
            os.write(2, f"sandbox setup failed: {error!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def _filter_children(flags: int) -> tuple[bool, str]:
    """Attach the children's seccomp filter to the template itself, once, so that each child inherits it at the
    fork instead of attaching its own (about 0.1 ms of a child's CPU here is the kernel's fixed cost of attaching
    any filter, however short). From then on the template runs under it too, with one addition: `clone` with
    exactly its own namespace flags (`flags` plus SIGCHLD), its fork. The children run as `nobody` without
    capabilities, so the kernel refuses them those flags all the same. Not where the children would keep the
    template's capabilities (a non-root template that may make namespaces): there, as where the filter cannot
    be attached here, each child attaches it itself (and fails without it, as before). Returns whether it is
    attached here, and how it is, for the hello message."""
    if not seccomp.supported():
        return False, "not supported here"
    if flags and not isolation.drops_root():
        return False, "attached by each child (its children would keep this template's capabilities)"
    try:
        isolation.no_new_privs()
        seccomp.install(flags)
    except OSError as error:
        return False, f"attached by each child (the template could not: {error})"
    return True, "attached once by the template, inherited by each child"


@functools.lru_cache(maxsize=64)  # a few kinds of child per server, as `supervisor._fork_fields` sends them
def _limits(fields: tuple[tuple[str, object], ...]) -> Limits:
    """The `Limits` these (name, value) fields describe, each distinct one built once (a fork touches less)."""
    return Limits(**dict(fields))


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried (`socket.recv_fds`, without its Python-level steps)."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += memoryview(data)[:len(data) - len(data) % 4].cast("i").tolist()
    return fds


def _decode(data: bytes) -> dict:
    """One control message (a JSON object), through the json module's C scanner directly."""
    text = data.decode()
    try:
        request, end = _SCAN(text, 0)
    except StopIteration:  # what the scanner raises for something that is no JSON value at all
        raise ValueError("a control message is not JSON") from None
    if not isinstance(request, dict) or text[end:].strip():
        raise ValueError("a control message is not one JSON object")
    return request


def _above(fd: int, low: int) -> int:
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return moved


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            return


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pid: int) -> None:
    """The child is its namespace's init (killing it ends the namespace) or its group's leader: both."""
    _signal(pid, signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def main() -> None:
    os.environ.update(child.BLAS_THREAD_ENV)  # before any warm import: the template must stay single-threaded
    control = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop: it closes the socket
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ...or terminates us: kill the tree all the same
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # never outlive the server
    LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.getppid() == 1:
        return
    lean = sys.argv[2:3] == ["--lean"]  # then argv[3]: the warm template's address space, the floor for ours
    missing = child.prepare(lean=lean)  # warm imports, matplotlib's font cache, then gc.freeze()
    if missing:
        print(f"sandbox template: warm modules not installed: {', '.join(missing)}", file=sys.stderr)
    # Children see only the sandbox's environment; a lean one also the BLAS settings, as it may load NumPy itself.
    isolation.fix_environment(child.BLAS_THREAD_ENV if lean else None)
    _, heap_detail = heap.fill_holes()  # last: so that what the template allocates from now on comes from the top
    Template(control, heap_detail, int(sys.argv[3]) if lean else 0).serve()


if __name__ == "__main__":
    main()
