"""`monty` back end: pydantic-monty, a Python interpreter with no OS access, in a warm pool of worker processes.

A one-shot execution gets a fresh Monty session (`Monty.checkout`), so no state crosses executions. A stateful
session (`open_session`) holds no worker while idle: its interpreter state lives in the server as the bytes of
Monty's own `dump()`, restored into a pooled worker for each execution (`load_session`) and dumped again after it,
so an idle session costs only those bytes and never a process. Time, memory and sleep
are bounded by Monty's own `ResourceLimits` inside the worker; the pool kills a worker that overruns them
(`feed_duration_limit_grace`, `request_timeout`). The blocking feed runs on a small dedicated thread pool, one
thread per Monty worker, so the event loop never waits on sandboxed code. (The sync pool is used rather than
`AsyncMonty`: it is faster per call here, and pydantic-monty 1.4.0's `AsyncMonty` aborts the interpreter at
exit in about a third of runs.)
"""

from __future__ import annotations

import ast
import asyncio
import functools
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pydantic_monty
from pydantic_monty import Monty, MontyCrashedError, MontyError, MontySyntaxError

from .output import CappedBuffer, result
from .types import TIMEOUT_EXIT_CODE, BackendReport, ExecutionResult, FileInfo, Layer, Limits, SandboxUnavailable

NAME = "monty"
# Appended to every snippet so the trailing expression's value (which Monty returns to the host, where a huge
# one costs seconds and hundreds of MiB) is `None`. `pass` keeps unfinished code (open bracket, trailing `\`,
# block header) a syntax error rather than completing it.
_DISCARD_VALUE = "\npass\nNone"
# A hard backstop beyond the sandbox's own limit: the pool kills a worker whose turn runs this long.
_REQUEST_GRACE_SECONDS = 5.0
# Concurrent executions (Monty workers and the threads that drive them); more callers wait their turn.
WORKERS = max(4, 2 * (os.cpu_count() or 1))


def _resource_limits(limits: Limits) -> dict:
    return {
        "max_feed_duration_secs": limits.timeout_seconds,
        "max_total_sleep_secs": limits.timeout_seconds,
        "max_memory": limits.memory_mb * 1024 * 1024,
    }


def _hit_time_limit(exc: MontyError) -> bool:
    """True for Monty's own feed-time or sleep limit (uncatchable in the sandbox), not a user `TimeoutError`."""
    inner = exc.exception()
    return isinstance(inner, TimeoutError) and "limit exceeded" in str(inner)


def _show_last_value(code: str, cap: int) -> str:
    """`code` rewritten so Monty returns the text (repr, at most `cap` characters) of a last bare expression, as a
    REPL shows it, also binding it to `_`; `None` when the code ends in a statement or the value is None. Code the
    host cannot parse is returned as written (Monty reports the error)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code + _DISCARD_VALUE
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code + _DISCARD_VALUE
    last = tree.body[-1]
    if isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name) and last.value.func.id == "print":
        return code + _DISCARD_VALUE  # the commonest last line; its value is None
    lines = code.splitlines(keepends=True)
    # ast offsets are in UTF-8 bytes within a line
    head = "".join(lines[: last.lineno - 1]) + lines[last.lineno - 1].encode()[: last.col_offset].decode()
    expr = ast.get_source_segment(code, last)
    if expr is None:
        return code + _DISCARD_VALUE
    return f"{head}{_BIND}{expr}\n)\npass\nNone if _ is None else repr(_)[:{cap}]"


_BIND = "_ = ("
# A traceback's source line of the rewritten last expression, and the marker line under it.
_BOUND_LINE = re.compile(r"^( +)" + re.escape(_BIND) + r"(.*)\n( +)([~^]+)$", re.MULTILINE)


def _unbind(message: str) -> str:
    """Show a traceback through the rewritten last line as the caller wrote it (without `_ = (`)."""
    def restore(match: re.Match) -> str:
        indent, rest, marks_indent, marks = match.groups()
        return f"{indent}{rest}\n{marks_indent[:-len(_BIND)] or ' '}{marks}"
    return _BOUND_LINE.sub(restore, message)


class MontySession:
    """One stateful Monty interpreter; its state is Monty's `dump()` between executions (see the module doc).

    Monty's own time limit interrupts a cell with an uncatchable TimeoutError and the session survives with what
    the cell did so far. When the worker dies instead (a single operation overran the limit past the pool's
    grace, or crashed) the session ends: that result's `notice` says the state was lost and `alive` is False.
    Monty has no file system, so there are no session files: `files()` is empty, `upload` raises
    SandboxUnavailable, `read`/`delete` raise FileNotFoundError.
    """

    sandbox = NAME

    def __init__(self, backend: "Backend", limits: Limits) -> None:
        self.id = uuid.uuid4().hex
        self._backend, self.limits = backend, limits
        self._monty_limits = _resource_limits(limits)
        self._state: bytes | None = None  # None: a fresh interpreter
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def state_bytes(self) -> int:
        """Size of the kept interpreter state (what an idle session costs the server)."""
        return len(self._state or b"")

    async def run(self, code: str) -> ExecutionResult:
        backend, limits = self._backend, self.limits
        started = time.perf_counter()
        stdout = CappedBuffer(limits.max_output_bytes)
        stderr = CappedBuffer(limits.max_output_bytes)
        if not self._alive:
            stderr.write(b"this session has ended; open a new one\n")
            return result(NAME, stdout, stderr, 1, False, started)
        streams = {"stdout": stdout, "stderr": stderr}

        def on_print(stream: str, text: str) -> None:
            streams[stream].write(text.encode("utf-8", "replace"))

        pool = backend._pool or await backend._ensure_pool()
        value, notice, exit_code, timed_out = None, "", 0, False
        try:
            value, state, error = await asyncio.get_running_loop().run_in_executor(
                backend._executor, self._feed, pool, self._state, code, on_print)
        except MontyCrashedError as exc:
            self._end()
            timed_out = exc.timed_out
            exit_code = TIMEOUT_EXIT_CODE if timed_out else 1
            stderr.write(f"monty worker died: {exc}\n".encode())
            notice = ("The execution " + ("ran past its time limit and could not be interrupted" if timed_out
                                          else "crashed the interpreter")
                      + ", so this session ended and its state (variables, functions) was lost.")
        else:
            if error is not None:
                timed_out = _hit_time_limit(error)
                exit_code = TIMEOUT_EXIT_CODE if timed_out else 1
                message = error.display() if hasattr(error, "display") else str(error)
                stderr.write(f"{_unbind(message)}\n".encode("utf-8", "replace"))
            quota = limits.memory_mb * 1024 * 1024
            if len(state) > quota:
                self._end()
                notice = (f"The session's state grew to {len(state)} bytes, past its {limits.memory_mb} MiB "
                          "memory quota, so this session ended and its state was lost.")
            else:
                self._state = state
        out = result(NAME, stdout, stderr, exit_code, timed_out, started)
        out.value = value if isinstance(value, str) else None
        out.notice = notice
        return out

    def _feed(self, pool: Monty, state: bytes | None, code: str, on_print):
        """Blocking (on the executor): restore, run one cell, dump. Returns (value, new state, MontyError|None)."""
        with pool.checkout(limits=self._monty_limits) as session:
            if state is not None:
                session.load_session(state)
            value, error = None, None
            rewritten = _show_last_value(code, self.limits.max_output_bytes)
            try:
                value = session.feed_run(rewritten, print_callback=on_print)
            except MontyCrashedError:
                raise
            except MontySyntaxError as exc:
                error = exc
                if rewritten != code:  # nothing ran; show the message on the caller's own lines
                    try:
                        session.feed_run(code + _DISCARD_VALUE, print_callback=on_print)
                        error = None
                    except MontyCrashedError:
                        raise
                    except MontyError as again:
                        error = again
            except MontyError as exc:
                error = exc
            return value, session.dump(), error

    def _end(self) -> None:
        self._alive, self._state = False, None

    async def upload(self, name: str, data: bytes) -> FileInfo:
        raise SandboxUnavailable("the monty sandbox has no file system, so a session cannot hold files; use the "
                                 "subprocess back end for files")

    async def files(self) -> list[FileInfo]:
        return []

    async def read(self, name: str) -> bytes:
        raise FileNotFoundError(f"{name}: the monty sandbox has no file system")

    async def open_file(self, name: str):
        raise FileNotFoundError(f"{name}: the monty sandbox has no file system")

    async def delete(self, name: str) -> None:
        raise FileNotFoundError(f"{name}: the monty sandbox has no file system")

    async def close(self) -> None:
        self._end()


class Backend:
    """Runs Python snippets in pydantic-monty sessions: a fresh one per one-shot run, or a kept one per session."""

    name = NAME

    def __init__(self, limits: Limits, language: str = "python") -> None:
        self.limits = limits
        self.language = language
        self._monty_limits = _resource_limits(limits)
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="monty")
        self._pool: Monty | None = None
        self._starting = asyncio.Lock()

    async def _ensure_pool(self) -> Monty:
        async with self._starting:
            if self._pool is None:
                pool = Monty(max_processes=WORKERS, request_timeout=self.limits.timeout_seconds + _REQUEST_GRACE_SECONDS)
                await asyncio.get_running_loop().run_in_executor(self._executor, pool.__enter__)
                self._pool = pool
        return self._pool

    async def start(self) -> None:
        """Spawn the warm worker now rather than on the first execution."""
        await self._ensure_pool()

    def _feed(self, pool: Monty, code: str, on_print) -> None:
        """Blocking: one fresh session, one feed (runs on the executor)."""
        with pool.checkout(limits=self._monty_limits) as session:
            try:
                session.feed_run(code + _DISCARD_VALUE, print_callback=on_print)
            except MontySyntaxError:
                # Nothing ran; feed the code as written so the message shows only the caller's lines.
                session.feed_run(code, print_callback=on_print)

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        started = time.perf_counter()
        language = language or self.language
        stdout = CappedBuffer(self.limits.max_output_bytes)
        stderr = CappedBuffer(self.limits.max_output_bytes)
        if language != "python":
            stderr.write(f"the monty sandbox runs Python only, not {language!r}\n".encode())
            return result(NAME, stdout, stderr, 1, False, started)

        streams = {"stdout": stdout, "stderr": stderr}

        def on_print(stream: str, text: str) -> None:
            streams[stream].write(text.encode("utf-8", "replace"))

        exit_code, timed_out = 0, False
        pool = self._pool or await self._ensure_pool()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._feed, pool, code, on_print)
        except MontyCrashedError as exc:
            timed_out = exc.timed_out
            exit_code = TIMEOUT_EXIT_CODE if timed_out else 1
            stderr.write(f"monty worker died: {exc}\n".encode())
        except MontyError as exc:
            timed_out = _hit_time_limit(exc)
            exit_code = TIMEOUT_EXIT_CODE if timed_out else 1
            message = exc.display() if hasattr(exc, "display") else str(exc)
            stderr.write(f"{message}\n".encode("utf-8", "replace"))
        return result(NAME, stdout, stderr, exit_code, timed_out, started)

    async def open_session(self, language: str | None = None, limits: Limits | None = None,
                           first_cell: str | None = None) -> MontySession:
        """A stateful session (with its own `limits` if given); no worker is held while it is idle."""
        language = language or self.language
        if language != "python":
            raise SandboxUnavailable(f"the monty sandbox runs Python only, not {language!r}")
        await self._ensure_pool()
        return MontySession(self, limits or self.limits)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, pool.__exit__, None, None, None)
        self._executor.shutdown(wait=False)


@functools.lru_cache(maxsize=None)
def _probe() -> str | None:
    """Run `print(1)` in a real Monty worker once per process; None when it works, else the reason."""
    out: list[str] = []
    try:
        with pydantic_monty.Monty(min_processes=1, max_processes=1, request_timeout=10.0) as pool:
            with pool.checkout(limits={"max_feed_duration_secs": 5.0}) as session:
                session.feed_run("print(1)", print_callback=lambda _stream, text: out.append(text))
    except Exception as exc:  # noqa: BLE001 - any failure is the reason the back end is unusable
        return f"{type(exc).__name__}: {exc}"
    return None if "".join(out) == "1\n" else f"print(1) printed {''.join(out)!r}"


def report(limits: Limits) -> BackendReport:
    """Whether a real Monty worker runs `print(1)` here, and what the back end isolates."""
    reason = _probe()
    usable = reason is None
    version = pydantic_monty.__version__
    return BackendReport(
        name=NAME,
        usable=usable,
        detail=f"pydantic-monty {version}: a Python subset, no OS access" if usable else reason,
        languages=("python",),
        layers=[
            Layer(
                "no OS access",
                usable,
                "no filesystem, environment, subprocess or socket: open() raises PermissionError, "
                "os.environ/os.getenv are unsupported, subprocess/socket cannot be imported",
            ),
            Layer(
                "resource limits",
                usable,
                f"Monty ResourceLimits: run time {limits.timeout_seconds:g} s and sleep "
                f"{limits.timeout_seconds:g} s (uncatchable TimeoutError), heap {limits.memory_mb} MiB "
                "(MemoryError), recursion depth 1000",
            ),
            Layer(
                "worker process",
                usable,
                "code runs in a pooled `monty` worker process, a fresh session per execution; a crashed or "
                f"overrunning worker is killed and replaced (hard deadline {_REQUEST_GRACE_SECONDS:g} s past the "
                "timeout)",
            ),
            Layer("output cap", usable, f"stdout and stderr capped at {limits.max_output_bytes} bytes each"),
            Layer(
                "sessions",
                usable,
                "state kept as Monty's own dump() in the server between executions (no worker held while idle), "
                f"restored into a pooled worker per execution; state larger than {limits.memory_mb} MiB ends the "
                "session; no files (Monty has no file system)",
            ),
        ],
    )
