"""The warm parent: started once with an empty environment, it forks one confined child per execution.

Run as `python -I -m local_code_interpreter.sandbox.forkserver FD`. Requests and results are JSON frames on
the socket FD. One thread, one selector loop: it forks, collects capped output, enforces the wall-clock
timeout, reaps, kills whatever a finished execution left behind, and removes its scratch directory.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass

from . import isolation, landlock
from .libc import LIBC
from .output import CappedBuffer
from .types import TIMEOUT_EXIT_CODE, Limits

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_READ_CHUNK = 65536
_FLOOD_FACTOR = 16  # past this many times the cap, the execution is killed: the rest would be thrown away
_ORPHAN_SWEEP_SECONDS = 0.05
# Warm the modules that model-written code reaches for most, so the forked child does not import them.
_WARM_MODULES = ("json", "math", "re", "random", "statistics", "datetime", "collections", "itertools",
                 "functools", "decimal", "fractions", "string", "textwrap", "traceback", "csv", "io",
                 "pathlib", "subprocess", "hashlib", "base64", "heapq", "bisect", "dataclasses", "typing")


def send_frame(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def read_frames(buffer: bytearray) -> list[dict]:
    """Pop every complete frame from `buffer`."""
    frames = []
    while len(buffer) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer)
        if len(buffer) < _HEADER.size + size:
            break
        frames.append(json.loads(buffer[_HEADER.size:_HEADER.size + size]))
        del buffer[:_HEADER.size + size]
    return frames


@dataclass
class _Stream:
    fd: int
    output: CappedBuffer


@dataclass
class _Job:
    id: str
    pid: int
    scratch: str
    limits: Limits
    started: float
    streams: dict[str, _Stream]
    exit_code: int | None = None
    timed_out: bool = False
    flooded: bool = False
    over_quota: str = ""  # what it outgrew: "scratch" or "memory"
    exited_at: float | None = None
    checked_at: float = 0.0


class ForkServer:
    def __init__(self, control: socket.socket):
        self.control = control
        self.inbox = bytearray()
        self.selector = selectors.DefaultSelector()
        self.jobs: dict[int, _Job] = {}
        self.scratch_root = tempfile.mkdtemp(prefix="lci-sandbox-")
        self.landlock_abi = landlock.abi_version()
        self.rules = isolation.landlock_rules(self.landlock_abi)
        self.budget_cache = (0.0, 0)
        self.sweep_at: float | None = None
        if isolation.drops_root():
            os.chmod(self.scratch_root, 0o711)

    # The loop ----------------------------------------------------------------------------------------
    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        try:
            while self._step(wake_r):
                pass
        finally:
            for job in list(self.jobs.values()):
                self._kill(job)
            shutil.rmtree(self.scratch_root, ignore_errors=True)

    def _step(self, wake_r: int) -> bool:
        for key, _ in self.selector.select(self._next_timeout()):
            if key.data == "control":
                if not self._read_control():
                    return False
            elif key.data == "wake":
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                self._reap()
            else:
                self._read_stream(*key.data)
        self._enforce_deadlines()
        self._enforce_quotas()
        self._finish_ready()
        if self.sweep_at is not None and time.monotonic() >= self.sweep_at:
            self._sweep_orphans()
        return True

    def _next_timeout(self) -> float | None:
        moments = [job.started + job.limits.timeout_seconds for job in self.jobs.values() if job.exit_code is None]
        moments += [max(job.started, job.checked_at) + isolation.QUOTA_CHECK_SECONDS
                    for job in self.jobs.values() if job.exit_code is None and not job.over_quota]
        moments += [job.exited_at + 0.5 for job in self.jobs.values() if job.exited_at is not None]
        if self.sweep_at is not None:
            moments.append(self.sweep_at)
        return max(0.0, min(moments) - time.monotonic()) if moments else None

    # Requests ----------------------------------------------------------------------------------------
    def _read_control(self) -> bool:
        try:
            chunk = self.control.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False  # the server went away: so do we
        self.inbox += chunk
        for request in read_frames(self.inbox):
            self._start(request)
        return True

    def _start(self, request: dict) -> None:
        limits = Limits(**request["limits"])
        scratch = tempfile.mkdtemp(dir=self.scratch_root)
        if isolation.drops_root():
            os.chown(scratch, isolation.NOBODY, isolation.NOBODY)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        budget = self._process_budget(limits)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            self._child(request["code"], scratch, limits, budget, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        cap = limits.max_output_bytes
        streams = {"stdout": _Stream(out_r, CappedBuffer(cap)), "stderr": _Stream(err_r, CappedBuffer(cap))}
        job = _Job(request["id"], pid, scratch, limits, started, streams)
        self.jobs[pid] = job
        for name, stream in streams.items():
            os.set_blocking(stream.fd, False)
            self.selector.register(stream.fd, selectors.EVENT_READ, (job, name))

    def _process_budget(self, limits: Limits) -> int:
        """RLIMIT_NPROC counts every task of the uid, so the budget is what it has now plus the allowance."""
        checked, count = self.budget_cache
        if time.monotonic() - checked > 1.0:
            uid = isolation.NOBODY if isolation.drops_root() else os.geteuid()
            count = _count_tasks(uid)
            self.budget_cache = (time.monotonic(), count)
        return count + limits.max_processes

    # The child ---------------------------------------------------------------------------------------
    def _child(self, code: str, scratch: str, limits: Limits, budget: int, out_w: int, err_w: int) -> None:
        status = 1
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            isolation.apply(scratch, limits, self.landlock_abi, budget, self.rules)
            sys.stdout.reconfigure(line_buffering=True)
            sys.stderr.reconfigure(line_buffering=True)
            status = _run_code(code)
        except BaseException as error:  # the setup failed: say so on stderr, never run unconfined code
            try:
                os.write(2, f"sandbox setup failed: {error!r}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(status)

    # Output, deadlines, reaping ----------------------------------------------------------------------
    def _read_stream(self, job: _Job, name: str) -> None:
        stream = job.streams[name]
        try:
            chunk = os.read(stream.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self._close_stream(job, name)
            return
        stream.output.write(chunk)
        if stream.output.seen > job.limits.max_output_bytes * _FLOOD_FACTOR and not job.flooded:
            job.flooded = True
            self._kill(job)

    def _close_stream(self, job: _Job, name: str) -> None:
        stream = job.streams[name]
        self.selector.unregister(stream.fd)
        os.close(stream.fd)
        stream.fd = -1

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for job in self.jobs.values():
            if job.exit_code is None and not job.timed_out and now >= job.started + job.limits.timeout_seconds:
                job.timed_out = True
                self._kill(job)

    def _enforce_quotas(self) -> None:
        """What rlimits cannot bound per execution: its scratch tree, and memory summed over its processes."""
        now = time.monotonic()
        due = [job for job in self.jobs.values() if job.exit_code is None and not job.over_quota
               and now >= max(job.started, job.checked_at) + isolation.QUOTA_CHECK_SECONDS]
        for job in due:
            job.checked_at = now
            if isolation.scratch_overflows(job.scratch, job.limits.scratch_mb * 1024 * 1024):
                job.over_quota = "scratch"
            elif _memory_of_tree(job.pid) > job.limits.memory_mb * 1024 * 1024:
                job.over_quota = "memory"
            if job.over_quota:
                self._kill(job)
        if due:
            self._sweep_orphans()  # escapees of long runs die now, not when their execution ends

    def _kill(self, job: _Job) -> None:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            job = self.jobs.get(info.si_pid)
            if job is not None:
                self._kill(job)  # before reaping: the group id cannot be reused yet
            _, status = os.waitpid(info.si_pid, 0)
            if job is not None:
                job.exit_code = os.waitstatus_to_exitcode(status)
                job.exited_at = time.monotonic()
                self.sweep_at = time.monotonic()

    def _finish_ready(self) -> None:
        now = time.monotonic()
        for pid, job in list(self.jobs.items()):
            if job.exit_code is None:
                continue
            open_streams = [name for name, s in job.streams.items() if s.fd >= 0]
            if open_streams and now < job.exited_at + 0.5:
                continue  # a straggler may still hold the pipe; it was killed, give it a moment
            for name in open_streams:
                self._close_stream(job, name)
            del self.jobs[pid]
            send_frame(self.control, self._result(job))
            shutil.rmtree(job.scratch, ignore_errors=True)

    def _result(self, job: _Job) -> dict:
        outputs = {name: stream.output for name, stream in job.streams.items()}
        result = {"id": job.id, "timed_out": job.timed_out, "truncated": any(o.truncated for o in outputs.values()),
                  "duration_ms": round((job.exited_at - job.started) * 1000, 3),
                  **{name: output.text() for name, output in outputs.items()}}
        if job.timed_out:
            result["exit_code"] = TIMEOUT_EXIT_CODE
            result["stderr"] += f"\n[timed out after {job.limits.timeout_seconds:g} s: the execution and its processes were killed]\n"
        elif job.flooded:
            result["exit_code"] = 1
            result["stderr"] += "\n[killed: output flood]\n"
        elif job.over_quota == "scratch":
            result["exit_code"] = 1
            result["stderr"] += (f"\n[killed: the scratch directory grew past {job.limits.scratch_mb} MiB "
                                 f"or {isolation.SCRATCH_ENTRIES} entries]\n")
        elif job.over_quota == "memory":
            result["exit_code"] = 1
            result["stderr"] += f"\n[killed: its processes used more than {job.limits.memory_mb} MiB in all]\n"
        else:
            result["exit_code"] = _shell_style(job.exit_code)
        return result

    # Escapees ----------------------------------------------------------------------------------------
    def _sweep_orphans(self) -> None:
        """Kill processes a finished execution left behind in another group or session (we are subreaper)."""
        self.sweep_at = None
        live_sessions = {job.pid for job in self.jobs.values() if job.exit_code is None}
        killed = False
        for pid in _children():
            if pid in self.jobs:
                continue
            if _session_of(pid) in live_sessions:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed = True
            except ProcessLookupError:
                pass
        self._reap()
        if killed:  # their own children are reparented to us in turn
            self.sweep_at = time.monotonic() + _ORPHAN_SWEEP_SECONDS


def _run_code(code: str) -> int:
    """Run the user's code as `__main__`; the exit status follows CPython's own conventions."""
    import builtins
    import traceback

    sys.argv = ["<code>"]
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, "<code>", "exec"), namespace)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException as error:
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)  # hide this frame
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return status & 0xFF


def _shell_style(code: int) -> int:
    """A signal death becomes 128 + signal number, as shells report it."""
    return 128 - code if code < 0 else code


def _children(pid: int | None = None) -> list[int]:
    """Direct children of a process (all its threads'), from /proc."""
    pid = pid or os.getpid()
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def _memory_of_tree(root: int) -> int:
    """Proportional resident memory (PSS, so pages shared after fork count once) of a process and its
    descendants, in bytes."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
        pending += _children(pid)
    return total


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[4])
    except (OSError, IndexError, ValueError):
        return None


def _count_tasks(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop: it closes the socket
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ...or terminates us: clean up all the same
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # never outlive the server
    LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for module in _WARM_MODULES:
        __import__(module)
    gc.freeze()  # keep the warm heap shared between forks
    ForkServer(control).serve()


if __name__ == "__main__":
    main()
