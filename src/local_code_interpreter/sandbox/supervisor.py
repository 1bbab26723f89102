"""The supervisor: executions and sessions of the `subprocess` back end, on the server's event loop.

It owns everything that is an execution's: the child's pipes (cells in, results out, stdout, stderr), the
capped output, deadlines, quotas (the scratch tree, and PSS memory summed over the execution's processes),
the kill and the clean-up. The template (`template.py`) only forks: it gets the new child's descriptors and
never any code, input, output or file.

Why in the server's event loop and not a process of its own: the data it handles (code in, output out) is
the server's anyway (it arrived in a request and leaves in a reply), so another process would add a hop to
every execution (two more pipe crossings and a second event loop) without keeping anything from anyone; and
nothing is ever forked from the server, so nothing it holds reaches a child. What would block the loop never
runs on it: the quota walks (/proc and the scratch tree) and directory removal run in worker threads
(`asyncio.to_thread`), and the pipes are non-blocking readers of the loop.

Spare children: for each kind of child in use (one-shot or session, and its limits), a few are forked and
fully confined before any request, each blocked reading its empty cell pipe. An execution takes one and pays
neither fork nor confinement; the refill runs after it, off its critical path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import site
import socket
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from . import files, isolation, quota
from .output import TRUNCATION_NOTE, CappedBuffer
from .types import TIMEOUT_EXIT_CODE, FileInfo, Image, InvalidFileName, Limits, SandboxUnavailable

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
FLOOD_FACTOR = 16  # past this many times the cap, the execution is killed: the rest would be thrown away
IDLE_CHECK_SECONDS = 1.0  # an idle session that still runs threads or processes is measured this often
# A one-shot spare's RLIMIT_NPROC is the uid's task count at its fork plus `max_processes`; as sessions start
# that count grows, so an idle spare is replaced after this long rather than handed out with a stale limit.
SPARE_REFRESH_SECONDS = 10.0
# A session spare taken for a new session is replaced this long after, not at once: forking the replacement and
# its warm-up (~6 ms of CPU here) then do not compete with the first cell and the reply of the request that took
# it (2 vCPUs, new conversations 30 ms apart: p50 6.0-9.1 -> 4.1-5.2 ms). Requests that come faster meanwhile take
# the other spares (`process.SESSION_SPARES`: enough for about 15 ms of new conversations back to back).
SESSION_REFILL_DELAY_SECONDS = 0.015
SMALL_WALK = 200  # directory entries walked on the event loop after a session's cell; more go to a thread
CHILD_DESCRIPTORS = 5  # what the server holds per child: cells and results pipes, stdout, stderr, its directory
FORK_DESCRIPTORS = 4  # and while it is being forked: the child's ends of those pipes, until the template has them
ROOT_PREFIX = "lci-sandbox-"
LOCK_NAME = ".server-lives"  # marks a root locked (flock) by its live server
# The template's whole environment. Its heap on transparent huge pages (glibc's malloc with `hugetlb=1`, and
# CPython allocating through malloc rather than its own 256 KiB arenas): a fork copies one page-table entry
# per 2 MiB instead of 512, and a child's exit has as many fewer to drop. With NumPy, pandas and matplotlib
# warm (about 70 MiB of heap) a bare fork and exit took about 9 ms of CPU here, 4.5 ms with this. A copied
# huge page is split on the child's first write, so only the 4 KiB it touches is copied.
TEMPLATE_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "PYTHONMALLOC": "malloc"}
_READ_CHUNK = 65536
_TICK = 1 / os.sysconf("SC_CLK_TCK")  # the resolution of a process's CPU figures in /proc
STOPPED_NOTICE_SECONDS = 2.0  # how long a template that stops on its own waits to be explained by the server's stop
_MAX_RESULT_FRAME = 64 * 1024 * 1024


def template_env() -> dict[str, str]:
    """`TEMPLATE_ENV`, plus PYTHONPATH naming where this package was imported from when that is not a site
    directory (a checkout's or a worktree's `src`): the template always runs the server's own copy of the package,
    never another one installed in the same interpreter. A site directory needs no entry: the interpreter finds
    it by itself, behind the standard library (PYTHONPATH would put it in front)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root in {os.path.abspath(path) for path in site.getsitepackages()}:
        return dict(TEMPLATE_ENV)
    return {**TEMPLATE_ENV, "PYTHONPATH": root}


def _resolve(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def frame(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return HEADER.pack(len(data)) + data


@dataclass
class Cell:
    """What one cell produced, before it becomes an `ExecutionResult`."""

    stdout: CappedBuffer
    stderr: CappedBuffer
    reply: dict | None = None  # the child's result frame; None when it died first
    timed_out: bool = False
    interrupted: bool = False  # stopped by SIGINT within the grace period: the session survives
    killed: str = ""  # why the supervisor killed the child: "timeout", "flood", "scratch", "memory"
    status: int | None = None  # the child's exit status when it died
    finished: bool = False  # its reply came, or the child ended without one
    # What `Child.run` awaits while it waits for the end (`Child._finished_within`), resolved by whoever ends it;
    # and the pending quota check (`Child._watch_quotas`), a timer handle while the cell runs.
    waiter: asyncio.Future | None = field(default=None, repr=False)
    watch: asyncio.TimerHandle | None = field(default=None, repr=False)


class Child:
    """One confined child, from spare to end: its pipes, its directory, the cell it runs."""

    def __init__(self, supervisor: "Supervisor", key: tuple, limits: Limits, session: bool, scratch: str,
                 dirfd: int, pipes: dict[str, int]):
        self.supervisor, self.key, self.limits, self.session = supervisor, key, limits, session
        self.scratch, self.dirfd = scratch, dirfd
        self.cells_w, self.results_r = pipes["cells"], pipes["results"]
        self.streams = {"stdout": pipes["stdout"], "stderr": pipes["stderr"]}
        self.pid: int | None = None
        self.exited: asyncio.Future = asyncio.get_running_loop().create_future()
        self.cell: Cell | None = None
        self.between = Cell(CappedBuffer(limits.max_output_bytes), CappedBuffer(limits.max_output_bytes))
        self.inbox = bytearray()
        self.killed = ""
        self.disposed = False
        self.handed_out = False  # given to a run or a session (a spare until then)
        self.uploads = 0  # the server's own writes into the directory in flight (see `uploading`)...
        self.uploaded = 0  # ...and how many have started: a measurement that overlapped one does not count
        self.born = time.monotonic()
        self.cells = 0  # cells sent to it so far
        # CPU seconds a session's child used while no cell ran, over its life, in every gap between cells (see
        # `count_idle`), from where the current gap began (a cell's end, an idle check): its own process's CPU
        # and its live processes' (0 when it had none).
        self.idle_cpu = 0.0
        self._own_mark: float | None = None
        self._others_mark: float | None = None
        loop = asyncio.get_running_loop()
        for name, fd in self.streams.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read_stream, name)
        os.set_blocking(self.results_r, False)
        os.set_blocking(self.cells_w, False)
        loop.add_reader(self.results_r, self._read_results)

    @property
    def alive(self) -> bool:
        return not self.exited.done() and not self.killed

    # Pipes --------------------------------------------------------------------------------------------
    def _read_stream(self, name: str) -> None:
        fd = self.streams[name]
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_stream(name)
            return
        cell = self.cell or self.between  # between cells: a setup failure, or a session's background thread
        output = getattr(cell, name)
        output.write(chunk)
        if output.seen > self.limits.max_output_bytes * FLOOD_FACTOR:
            self.kill("flood")

    def _drain_streams(self) -> None:
        for name in list(self.streams):
            for _ in range(1024):  # bounded: a flood is cut by the cap's killing, not here
                fd = self.streams.get(name)
                if fd is None:
                    break
                output = getattr(self.cell or self.between, name)
                before = output.seen
                self._read_stream(name)
                if output.seen == before:
                    break

    def _close_stream(self, name: str) -> None:
        fd = self.streams.pop(name, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _read_results(self) -> None:
        try:
            chunk = os.read(self.results_r, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.results_r)
            self._finish(None)
            return
        self.inbox += chunk
        while len(self.inbox) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.inbox)
            if size > _MAX_RESULT_FRAME:
                self.kill("protocol")
                return
            if len(self.inbox) < HEADER.size + size:
                break
            data = bytes(self.inbox[HEADER.size:HEADER.size + size])
            del self.inbox[:HEADER.size + size]
            try:
                reply = json.loads(data)
            except ValueError:
                reply = {"exit_code": 1, "error": "the child sent an unreadable result"}
            self._finish(reply if isinstance(reply, dict) else None)

    def _finish(self, reply: dict | None) -> None:
        cell = self.cell
        if cell is not None and not cell.finished:
            cell.reply, cell.finished = reply, True
            _resolve(cell.waiter)

    def log_exit_by_itself(self, status: int) -> None:
        """Nobody asked it to end and no cell was running: its setup or warm-up failed (a spare), or something of
        the code's ended it between executions. Whoever uses it next finds it gone; the log says why."""
        self._drain_streams()  # what it printed last
        printed = self.between.stderr.text()[-500:] or "no output"
        if self.handed_out:
            log.warning("a sandbox child in use exited by itself between executions (status %s): %s", status, printed)
        else:
            log.warning("a spare sandbox child died before its first cell (status %s): %s", status, printed)

    def on_exit(self, status: int) -> None:
        if not self.exited.done():
            self.exited.set_result(status)
        if self.cell is not None:
            self.cell.status = status
        self._finish(None)

    async def _send_cell(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.cells_w, view)
                view = view[written:]
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self.cells_w, lambda: ready.done() or ready.set_result(None))
                try:
                    await asyncio.wait([ready, self.exited], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    loop.remove_writer(self.cells_w)
                if self.exited.done():
                    return
            except (BrokenPipeError, OSError):
                return  # the child is gone; its end is reported as a crash

    # Running a cell -----------------------------------------------------------------------------------
    async def run(self, code: str, grace_seconds: float) -> Cell:
        limits = self.limits
        cell = self.cell = self.between  # what came between cells is shown with this one
        self.cells += 1
        self.between = Cell(CappedBuffer(limits.max_output_bytes), CappedBuffer(limits.max_output_bytes))
        # The gap since the last cell's end (or idle check) is counted; a new session's first cell has none to
        # count, and its end marks the first gap: no read now.
        if self.session and self.alive and self._own_mark is not None \
                and (now := self.cpu_now(others=bool(self._others_mark))) is not None \
                and self.count_idle(*now[:2], allowance=_TICK):
            log.warning("a sandbox session was ended: %s", _IDLE_KILLS["cpu"](limits))
            self.kill("cpu")
        if not self.alive:
            cell.status = self.exited.result() if self.exited.done() else None
            cell.killed = self.killed
            return cell
        self._watch_quotas(cell)
        try:
            await self._send_cell(frame({"code": code}))
            if not await self._finished_within(cell, limits.timeout_seconds):
                cell.timed_out = True
                if self.session and grace_seconds > 0:
                    self.supervisor.signal(self, "interrupt")
                    cell.interrupted = await self._finished_within(cell, grace_seconds) and cell.reply is not None
                if not cell.interrupted:
                    self.kill("timeout")
                    if not await self._finished_within(cell, 10):
                        log.warning("sandbox child %s outlived SIGKILL by 10 s", self.pid)
        except BaseException:
            self.kill("cancelled")  # the caller went away: so does its execution
            raise
        finally:
            if cell.watch is not None:
                cell.watch.cancel()
                cell.watch = None  # a check in flight now changes nothing
        if cell.reply is None:  # it died: its status comes from the template, after its pipes closed
            await asyncio.wait([self.exited], timeout=10)
            if self.exited.done():
                cell.status = self.exited.result()
            else:
                log.warning("sandbox child %s closed its pipes but did not exit", self.pid)
        if self.session and self.alive and cell.reply is not None:
            # Quick cells each adding a little must not pass the disk quota between two periodic checks. A
            # small directory is walked here (tens of microseconds), a large one in a thread.
            quota_bytes = self.limits.scratch_mb * 1024 * 1024
            over = quota.scratch_overflows(self.scratch, quota_bytes, budget=SMALL_WALK)
            if over is None:
                over = await asyncio.to_thread(quota.scratch_overflows, self.scratch, quota_bytes)
            if over:
                self.kill("scratch")
                cell.killed = "scratch"
        if self.session and self.alive:  # the next gap begins
            self._own_mark, self._others_mark, _ = self.cpu_now(others=True) or (None, None, False)
        self._drain_streams()
        cell.killed = cell.killed or self.killed
        self.cell = None
        return cell

    async def _finished_within(self, cell: Cell, seconds: float) -> bool:
        """Whether the cell finished (its reply, or the child's end) within `seconds`; the cell is not touched.
        One future, resolved directly by `_finish` or by a timer: `wait_for(shield(...))` took a chain of four
        callbacks, each a pass of the event loop, between the reply and the waiting execution."""
        if cell.finished:
            return True
        loop = asyncio.get_running_loop()
        waiter = cell.waiter = loop.create_future()
        timer = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            cell.waiter = None
        return cell.finished

    def _watch_quotas(self, cell: Cell, warned: bool = False) -> None:
        """Scratch tree and memory, every `QUOTA_CHECK_SECONDS` while `cell` runs, each check in a worker thread.
        A timer, not a task: most cells end before the first check, and then only the timer is cancelled. The
        watch stops when `run` sets `cell.watch` to None. (Methods, not closures calling each other: those would
        make a reference cycle per cell, its buffers freed only by the garbage collector.) A check that raises is
        logged once per cell and the checks go on: a failure must not leave the rest of the execution unchecked."""
        cell.watch = asyncio.get_running_loop().call_later(isolation.QUOTA_CHECK_SECONDS, self._check_quotas, cell,
                                                           warned)

    def _check_quotas(self, cell: Cell, warned: bool) -> None:
        if cell.watch is not None:
            asyncio.get_running_loop().run_in_executor(None, self.over_quota).add_done_callback(
                functools.partial(self._checked_quotas, cell, warned))

    def _checked_quotas(self, cell: Cell, warned: bool, future: asyncio.Future) -> None:
        if cell.watch is None or future.cancelled():
            return  # the cell ended meanwhile
        if future.exception() is not None:
            if not warned:
                log.warning("a sandbox quota check failed (checking goes on)", exc_info=future.exception())
            self._watch_quotas(cell, warned=True)
        elif over := future.result():
            self.kill(over)
        else:
            self._watch_quotas(cell, warned)

    @contextlib.contextmanager
    def uploading(self):
        """Around a write of the server's into the directory: it writes beside the file it replaces and then
        renames, so both are on disk for a moment, and a quota check in that moment would blame the session."""
        self.uploads += 1
        self.uploaded += 1
        try:
            yield
        finally:
            self.uploads -= 1

    def over_quota(self) -> str:
        if quota.scratch_overflows(self.scratch, self.limits.scratch_mb * 1024 * 1024):
            return "scratch"
        if self.pid is None:
            return ""
        processes = self.processes()
        if sum(quota.pss(pid) for pid in processes) > self.limits.memory_mb * 1024 * 1024:
            return "memory"
        if self.session and len(processes) > self.limits.max_processes + 1:
            return "processes"  # a session's RLIMIT_NPROC has headroom (see template.SESSION_NPROC_HEADROOM)
        return ""

    def count_idle(self, own: float, others: float | None = None, allowance: float = 0.0) -> bool:
        """Count CPU used while no cell ran; whether the session is now past what it may use so.

        Code a session left running between executions (a thread, a process, or its own REPL loop replaced: the
        code runs in that process) may use at most `timeout_seconds` of CPU in all, over the session's life, so
        a session that looks idle cannot keep a CPU from everyone else until it expires. What it used since the
        current gap began counts, however often cells come (all read by the server, never reported by the
        child): `own`, the child process's CPU now (all its threads, and the processes it reaped), and
        `others`, its live processes' (None: not read now; a process started within the gap counts from the
        next gap on). `allowance`: what the REPL itself may use in a gap (a cell's start allows one clock tick,
        the figures' resolution)."""
        if self._own_mark is not None:
            self.idle_cpu += max(0.0, own - self._own_mark - allowance)
        self._own_mark = own
        if others is not None:
            if self._others_mark is not None:
                self.idle_cpu += max(0.0, others - self._others_mark)
            self._others_mark = others
        return self.idle_cpu > self.limits.timeout_seconds

    def cpu_now(self, others: bool, adopted: list[int] | None = None) -> tuple[float, float | None, bool] | None:
        """(its own process's CPU, its live processes' CPU, whether it is quiet) now, or None once it is gone.
        Its live processes' only if `others` (`adopted`, if already known: `Supervisor.adopted`), and then 0
        without a tree walk when it is quiet: one thread and no child, none adopted (the common case, one more
        read). Safe from a worker thread."""
        reading = quota.own_cpu(self.pid) if self.pid is not None else None
        if reading is None:
            return None
        own, threads = reading
        if not others:
            return own, None, False
        if adopted is None:
            adopted = self.supervisor.adopted(self.pid)
        if quota.quiet(self.pid, threads) and not adopted:
            return own, 0.0, True
        return own, quota.cpu_of_tree(self.pid, adopted) - own, False

    def processes(self) -> list[int]:
        """Its process, its descendants, and the processes of its session that left its tree (`adopted`)."""
        return quota.tree(self.pid) + self.supervisor.adopted(self.pid)

    # The end ------------------------------------------------------------------------------------------
    def kill(self, reason: str) -> None:
        if not self.killed:
            self.killed = reason
            if self.cell is not None and not self.cell.killed:
                self.cell.killed = reason
        self.supervisor.signal(self, "kill")

    async def gone(self) -> None:
        """Kill it and wait until it and every process it started have exited."""
        self.kill(self.killed or "ended")
        await asyncio.wait([self.exited], timeout=10)  # never cancels `exited`, which others may await too
        if not self.exited.done():
            log.warning("sandbox child %s did not exit within 10 s of SIGKILL", self.pid)

    async def dispose(self) -> None:
        """Kill it, wait for every process of it to be gone, close its pipes, remove its directory."""
        if self.disposed:
            return
        self.disposed = True
        if not self.exited.done():
            await self.gone()
        loop = asyncio.get_running_loop()
        for name in list(self.streams):
            self._close_stream(name)
        loop.remove_reader(self.results_r)
        for fd in (self.results_r, self.cells_w, self.dirfd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.rmdir(self.scratch)  # the usual case, an empty directory: no thread needed
        except OSError:
            await asyncio.to_thread(quota.remove_tree, self.scratch)


class Supervisor:
    """Talks to one template (started on first use, again if it dies) and keeps spare children."""

    def __init__(self, limits: Limits, spares: int = 2, session_spares: int = 1, grace_seconds: float = 1.0,
                 warm_peer: "Supervisor | None" = None):
        self.limits = limits
        # Given, this one's template is lean (`startup.py`) and `warm_peer` supervises the warm one: that starts
        # first (its font cache built, its address space known: the floor of the lean template's children's).
        self.warm_peer = warm_peer
        self.spare_counts = {False: spares, True: session_spares}
        self.grace_seconds = grace_seconds
        self.hello: dict = {}
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._starting: asyncio.Lock | None = None
        self._ids = 0
        self._forking: dict[int, asyncio.Future] = {}
        self._closing = False
        self._template_stopping = False  # it said it ends its children: their exits are not theirs to explain
        self._children: dict[int, Child] = {}  # pid -> live child
        self._spares: dict[tuple, list[Child]] = {}
        self._refills: dict[tuple, asyncio.Task] = {}
        self._idle_watch: asyncio.Task | None = None
        self._cleanups: set[asyncio.Task] = set()
        self.root = ""
        self._lock = -1
        self.hidden = 0  # tasks of the children's uid the template cannot see, as it last said (`tasks.py`)

    # The template -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.warm_peer is not None:
            await self.warm_peer.start()
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._process is not None and self._process.returncode is None and self._sock is not None:
                return
            self._closing = False  # started again after a close: spares are kept again
            self._template_stopping = False
            if not self.root:
                self.root = tempfile.mkdtemp(prefix=ROOT_PREFIX)
                if isolation.drops_root():
                    os.chmod(self.root, 0o711)
                # Locked while we live, before its marker exists: a marked root whose lock can be taken belongs
                # to a server that died without cleaning up (SIGKILL).
                self._lock = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fcntl.flock(self._lock, fcntl.LOCK_EX)
                os.close(os.open(os.path.join(self.root, LOCK_NAME), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                await asyncio.to_thread(remove_stale_roots, os.path.dirname(self.root))
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            lean = [] if self.warm_peer is None else ["--lean", str(self.warm_peer.hello.get("vm_size", 0))]
            self._process = await asyncio.create_subprocess_exec(
                # -s -P, not -I: isolated mode would ignore PYTHONMALLOC; the environment is ours alone anyway
                sys.executable, "-s", "-P", "-X", "utf8", "-m", "local_code_interpreter.sandbox.template",
                str(theirs.fileno()), *lean, env=template_env(), pass_fds=(theirs.fileno(),), cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            )
            theirs.close()
            self._sock = mine
            loop = asyncio.get_running_loop()
            hello = loop.create_future()
            self._forking[-1] = hello
            loop.add_reader(mine.fileno(), self._read_template)
            try:
                self.hello = await asyncio.wait_for(hello, 120)
            except (asyncio.TimeoutError, SandboxUnavailable):
                await self._stop_template()
                raise SandboxUnavailable("the sandbox template did not start")
            log.debug("sandbox template %d: %s; heap: %s; seccomp: %s", self._process.pid,
                      self.hello.get("namespace_detail"), self.hello.get("heap"), self.hello.get("seccomp"))
            self._hidden_tasks(self.hello.get("uid"), self.hello.get("hidden_tasks"))
            if self._idle_watch is None:
                self._idle_watch = loop.create_task(self._watch_idle())

    def _read_template(self) -> None:
        sock = self._sock
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if not self._closing and not self._template_stopping:  # killed outright (SIGKILL, the OOM killer)
                log.warning("the sandbox template ended without a word (killed?): its %d children ended with it "
                            "(their sessions ended); a new template starts on the next execution", len(self._children))
            self._template_gone()
            return
        message = json.loads(data)
        op = message.get("op")
        if op == "hello":
            future = self._forking.pop(-1, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif op in ("forked", "failed"):
            future = self._forking.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_result(message)
        elif op == "exited":
            child = self._children.pop(message["pid"], None)
            if child is not None:
                if child.cell is None and not child.killed and not child.exited.done() and not self._template_stopping:
                    child.log_exit_by_itself(message["status"])
                child.on_exit(message["status"])
        elif op == "hidden_tasks":
            self._hidden_tasks(message.get("uid"), message.get("count"))
        elif op == "stopping":
            self._template_stopping = True
            if not self._closing:  # someone else signalled it: said unless the server turns out to be stopping too
                asyncio.get_running_loop().call_later(STOPPED_NOTICE_SECONDS, self._stopped_by_someone_else,
                                                      len(self._children))

    def _hidden_tasks(self, uid: int | None, count: int | None) -> None:
        """The template found tasks of the children's uid that it cannot see counting against their process limit
        (`tasks.py`): said when they appear and when they are gone (once for both templates)."""
        if count is None or count < 0:
            if count == -1:
                log.warning("the sandbox could not tell how many tasks of uid %s count against its process limit "
                            "(a fork failed under any limit: the pids cgroup or the hard RLIMIT_NPROC binds)", uid)
            return
        self.hidden = count
        before = _HIDDEN_SAID.get(uid, False)
        _HIDDEN_SAID[uid] = bool(count)
        if count and not before:
            log.warning("%d tasks of uid %s that this container cannot see count against the sandbox's process limit "
                        "(other containers on this host run as the same user): each execution's limit includes "
                        "them; run this container as a user of its own (Kubernetes: securityContext.runAsUser) so "
                        "that they do not", count, uid)
        elif before and not count:
            log.info("no task of uid %s outside this container counts against the sandbox's process limit now", uid)

    def _stopped_by_someone_else(self, children: int) -> None:
        """A group- or cgroup-wide SIGTERM (systemd's default stop) reaches the template and the server at once:
        by now a stopping server is closing the sandbox, and the template's end needs no word. Otherwise it does."""
        if not self._closing:
            log.warning("the sandbox template stopped, not at this server's request: it ended its children (%d; "
                        "their sessions ended); a new template starts on the next execution", children)

    def _template_gone(self) -> None:
        """The template died (or was stopped): so did every child (PDEATHSIG). Restart on the next call."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for future in self._forking.values():
            if not future.done():
                future.set_exception(SandboxUnavailable("the sandbox template stopped; try again"))
        self._forking.clear()
        for child in list(self._children.values()):
            child.on_exit(-signal.SIGKILL)
        self._children.clear()
        for spares in self._spares.values():
            for child in spares:
                self._cleanup(child)
        self._spares.clear()

    def adopted(self, session: int | None) -> list[int]:
        """The processes of a child's session that left its tree, with their descendants. Without PID namespaces
        an orphan (a double fork) is re-parented to the template, a subreaper, not to the child, yet stays in the
        child's session (the child leads its own): its memory, CPU and count are the session's all the same.
        With namespaces orphans go to the child (its namespace's init), so there are none. One read of the
        template's children when all are known; safe from a worker thread (no iteration over our own state)."""
        return self.adoptions().get(session, []) if session is not None else []

    def adoptions(self) -> dict[int, list[int]]:
        """Every session's processes that left its child's tree (see `adopted`), by session id."""
        process = self._process
        if process is None or self.hello.get("pid_namespace"):
            return {}
        found: dict[int, list[int]] = {}
        for pid in quota.children(process.pid):
            if pid not in self._children and (session := quota.session_of(pid)) is not None:
                found.setdefault(session, []).extend(quota.tree(pid))
        return found

    def signal(self, child: Child, op: str) -> None:
        if child.pid is not None and child.pid in self._children and self._sock is not None:
            try:
                self._sock.send(json.dumps({"op": op, "pid": child.pid}).encode())
            except OSError:
                pass

    async def _stop_template(self) -> None:
        if self._sock is not None:
            self._template_gone()
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except asyncio.TimeoutError:
                self._process.kill()
                await self._process.wait()
            self._process = None

    async def close(self) -> None:
        self._closing = True  # no refill from here on (a session's delayed one may still be due)
        for task in self._refills.values():
            task.cancel()
        if self._idle_watch is not None:
            self._idle_watch.cancel()
            self._idle_watch = None
        spares = [child for spares in self._spares.values() for child in spares]
        self._spares.clear()
        live = list(self._children.values())
        await asyncio.gather(*(child.dispose() for child in spares + live), return_exceptions=True)
        await self._stop_template()
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self.root:
            await asyncio.to_thread(quota.remove_tree, self.root)
            self.root = ""
            os.close(self._lock)

    # Children -----------------------------------------------------------------------------------------
    async def child(self, limits: Limits | None = None, session: bool = False) -> Child:
        """A confined child ready for its first cell: a spare when one of this kind is waiting."""
        await self.start()
        limits = limits or self.limits
        key = (limits, session)
        spares = self._spares.setdefault(key, [])
        child = None
        while spares and child is None:
            candidate = spares.pop(0)
            if candidate.alive:
                child = candidate
            else:
                self._cleanup(candidate)
        if child is None:
            child = await self._fork(limits, session)
        child.handed_out = True
        if not session:
            return child  # a one-shot run's spare is replaced when it is released: after its reply
        self._refill_soon(key, SESSION_REFILL_DELAY_SECONDS)  # a session's: the fork does not meet its first cell
        return child

    def prefill(self, limits: Limits, session: bool) -> None:
        """Fork this kind's spare children now, before any request asks for one."""
        self._refill((limits, session))

    def _refill_soon(self, key: tuple, delay: float = 0.0) -> None:
        """Refill after the current request had its turn (`delay` seconds from now, else the next loop
        iteration): the fork does not compete with its execution."""
        asyncio.get_running_loop().call_later(delay, self._refill, key)

    def _refill(self, key: tuple) -> None:
        target = self.spare_counts[key[1]]
        running = self._refills.get(key)
        if target <= 0 or self._closing or (running is not None and not running.done()):
            return

        async def refill() -> None:
            spares = self._spares.setdefault(key, [])
            while len(spares) < target:
                try:
                    child = await self._fork(*key)  # it warms itself (child.serve) while it waits here
                except SandboxUnavailable:
                    return
                if child.alive:
                    spares.append(child)
                else:
                    self._cleanup(child)

        self._refills[key] = asyncio.get_running_loop().create_task(refill())

    async def _fork(self, limits: Limits, session: bool) -> Child:
        await self.start()
        scratch = tempfile.mkdtemp(dir=self.root)
        if isolation.drops_root():
            os.chown(scratch, isolation.NOBODY, isolation.NOBODY)
        dirfd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        cells_r, cells_w = os.pipe2(os.O_CLOEXEC)
        results_r, results_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        theirs = [dirfd, cells_r, results_w, out_w, err_w]
        child = Child(self, (limits, session), limits, session, scratch, dirfd,
                      {"cells": cells_w, "results": results_r, "stdout": out_r, "stderr": err_r})
        self._ids += 1
        request_id = self._ids
        future = asyncio.get_running_loop().create_future()
        self._forking[request_id] = future
        try:
            socket.send_fds(self._sock, [b'{"op":"fork","id":%d,%s}' % (request_id, _fork_fields(limits, session))],
                            theirs)
            reply = await future
        except BaseException:
            self._forking.pop(request_id, None)
            child.on_exit(-signal.SIGKILL)
            self._cleanup(child)
            raise
        finally:
            for fd in theirs[1:]:
                os.close(fd)
        if reply["op"] == "failed":
            child.on_exit(-signal.SIGKILL)
            self._cleanup(child)
            raise SandboxUnavailable(reply["error"])
        child.pid = reply["pid"]
        self._children[child.pid] = child
        return child

    def _cleanup(self, child: Child) -> None:
        """Dispose of a child in the background (its reply, if any, is already on its way)."""
        task = asyncio.get_running_loop().create_task(child.dispose())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def release(self, child: Child) -> None:
        """End a one-shot run's child (its reply is on its way) and replace it in the spare pool."""
        child.kill(child.killed or "ended")
        self._cleanup(child)
        if not child.session:
            self._refill_soon(child.key)

    async def _watch_idle(self) -> None:
        """Quotas hold between a session's executions too: a thread or process it left running is measured.
        And one-shot spares are renewed before their process limit goes stale."""
        while True:
            await asyncio.sleep(IDLE_CHECK_SECONDS)
            stale = time.monotonic() - SPARE_REFRESH_SECONDS
            for key, spares in self._spares.items():
                if not key[1] and spares and spares[0].born < stale:
                    self._cleanup(spares.pop(0))
                    self._refill(key)
            idle = {child: (child.uploaded, child.cells) for child in self._children.values() if child.session
                    and child.cell is None and child.alive and child.pid is not None and not child.uploads}
            if idle:  # one thread hop for all of them: a hop each cost ~135 us per idle session every second
                for child, over, own, others in await asyncio.to_thread(_measure_idle, list(idle)):
                    uploaded, cells = idle[child]
                    if not child.alive or child.cells != cells or child.cell is not None:
                        continue  # a cell began meanwhile: its start counted the gap
                    if child.count_idle(own, others) and not over:
                        over = "cpu"
                    if over and child.uploaded == uploaded:  # no upload began while it was measured
                        log.warning("an idle sandbox session was ended: %s", _IDLE_KILLS[over](child.limits))
                        child.kill(over)


# Whether tasks of a uid hidden from the templates were last said to count (`Supervisor._hidden_tasks`): both
# templates find them, the log says it once.
_HIDDEN_SAID: dict[int | None, bool] = {}

# Why the idle watch ended a session, for the log (and a cell that raced with it).
_IDLE_KILLS = {
    "scratch": lambda limits: f"its directory grew past {limits.scratch_mb} MiB between executions",
    "memory": lambda limits: f"its processes used more than {limits.memory_mb} MiB between executions",
    "processes": lambda limits: f"it ran more than {limits.max_processes} processes between executions",
    "cpu": lambda limits: (f"code it left running between executions used more than {limits.timeout_seconds:g} s "
                           "of CPU"),
}


@functools.lru_cache(maxsize=64)  # a few kinds of child (limits, session or not) per process
def _fork_fields(limits: Limits, session: bool) -> bytes:
    """A fork request's fields for this kind of child, encoded once (asdict was a tenth of a fork's cost)."""
    return json.dumps({"limits": asdict(limits), "session": session}, separators=(",", ":"))[1:-1].encode()


def _measure_idle(children: list[Child]) -> list[tuple[Child, str, float, float]]:
    """(child, quota it is over or "", its own CPU, its live processes' CPU) for each idle session still there
    (as `Child.cpu_now`, with the quotas). A quiet child (one thread, no process of its own, none adopted) has
    only its own CPU read: its directory, memory and processes cannot have grown since its last cell. Runs in a
    worker thread; the CPU is counted on the event loop (`Child.count_idle`), which knows whether a cell began
    meanwhile."""
    found = []
    adoptions = children[0].supervisor.adoptions() if children else {}  # the children of one supervisor
    for child in children:
        now = child.cpu_now(others=True, adopted=adoptions.get(child.pid, []))
        if now is not None:  # else gone
            own, others, quiet = now
            found.append((child, "" if quiet else child.over_quota(), own, others))
    return found


def remove_stale_roots(parent: str) -> list[str]:
    """Remove the scratch roots (directories of the executions they ran) of servers of ours that died without
    cleaning up: their lock can be taken. A root of a live server, or of another user, is left alone."""
    removed = []
    for entry in os.scandir(parent):
        if not entry.name.startswith(ROOT_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            lock = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.lexists(os.path.join(entry.path, LOCK_NAME)):
            os.close(lock)
            continue  # not one of ours, or being created right now (its marker comes after its lock)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its server lives
        finally:
            os.close(lock)
        try:
            quota.remove_tree(entry.path)
        except OSError:
            continue  # another server's sweep removed it first
        removed.append(entry.path)
    return removed


def result_fields(cell: Cell, limits: Limits, session: bool, grace_seconds: float) -> dict:
    """The `ExecutionResult` fields of a finished cell; `notice` says what happened to a session."""
    reply = cell.reply or {}
    stderr_note, notice = "", ""
    if cell.timed_out:
        exit_code = TIMEOUT_EXIT_CODE
        if cell.interrupted:
            stderr_note = f"\n[timed out after {limits.timeout_seconds:g} s: the execution was interrupted]\n"
        else:
            stderr_note = (f"\n[timed out after {limits.timeout_seconds:g} s: the execution and its processes "
                           "were killed]\n")
            if session:
                notice = (f"The session's state was lost: the code did not stop within {grace_seconds:g} s of "
                          "the timeout, so the session was ended. The next execution starts a fresh session.")
    elif cell.killed in ("flood", "scratch", "memory", "processes", "protocol", "deleted", "cpu"):
        exit_code = 1
        stderr_note = {
            "flood": "\n[killed: output flood]\n",
            "scratch": (f"\n[killed: the scratch directory grew past {limits.scratch_mb} MiB "
                        f"or {quota.SCRATCH_ENTRIES} entries]\n"),
            "memory": f"\n[killed: Memory quota: its processes used more than {limits.memory_mb} MiB in all]\n",
            "processes": f"\n[killed: it ran more than {limits.max_processes} processes besides the interpreter]\n",
            "protocol": "\n[killed: the interpreter broke the result protocol]\n",
            "deleted": "\n[killed: its session was deleted (or its conversation)]\n",
            "cpu": f"\n[killed: {_IDLE_KILLS['cpu'](limits)}]\n",
        }[cell.killed]
        if session:
            notice = f"The session ended ({stderr_note.strip()[1:-1]}); its state was lost."
    elif cell.reply is not None:
        exit_code = reply.get("exit_code", 0)
    else:
        status = cell.status if cell.status is not None else -signal.SIGKILL
        exit_code = 128 - status if status < 0 else status
        if session:
            how = (f"was killed by signal {-status} ({signal.Signals(-status).name})" if status < 0
                   else f"exited with status {status}")
            notice = f"The session ended: its interpreter {how}; its state was lost."
    value, truncated = _value(reply.get("value"), limits.max_output_bytes)
    return {"stdout": cell.stdout.text(), "stderr": cell.stderr.text() + stderr_note,
            "exit_code": exit_code if _is_int(exit_code) and 0 <= exit_code <= 255 else 1,
            "timed_out": cell.timed_out, "truncated": cell.stdout.truncated or cell.stderr.truncated or truncated,
            "value": value, "images": _images(reply.get("images")), "files": _files(reply.get("files")),
            "notice": notice}


# The result frame comes from a process the code owns: it may be forged. Take only what is well formed.
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(value, limit: int) -> tuple[str | None, bool]:
    """A last expression's text, capped like a stream."""
    if not isinstance(value, str):
        return None, False
    if len(value) <= limit:
        return value, False
    note = TRUNCATION_NOTE.format(limit=limit)
    return value[:max(limit - len(note), 0)] + note, True


def _images(images) -> list[Image]:
    found = []
    for image in images if isinstance(images, list) else []:
        if not isinstance(image, dict) or not isinstance(image.get("media_type"), str) \
                or not isinstance(image.get("data"), str):
            continue
        try:
            found.append(Image(image["media_type"], base64.b64decode(image["data"], validate=True)))
        except ValueError:
            continue
    return found


def _files(infos) -> list[FileInfo]:
    found = []
    for info in infos if isinstance(infos, list) else []:
        if not isinstance(info, dict) or not _is_int(info.get("size")) or info["size"] < 0 \
                or not isinstance(info.get("modified"), (int, float)) or isinstance(info.get("modified"), bool):
            continue
        try:
            name = files.check_name(info.get("name"))
        except InvalidFileName:
            continue
        media_type = info.get("media_type")
        found.append(FileInfo(name, info["size"], float(info["modified"]),
                              media_type if isinstance(media_type, str) else files.media_type(name)))
    return found
