"""`monty` back end: pydantic-monty, a Python interpreter with no OS access, in a warm pool of worker processes.

Every execution gets a fresh session (`Monty.checkout`), so no state crosses executions. Time, memory and sleep
are bounded by Monty's own `ResourceLimits` inside the worker; the pool kills a worker that overruns them
(`feed_duration_limit_grace`, `request_timeout`). The blocking feed runs on a small dedicated thread pool, one
thread per Monty worker, so the event loop never waits on sandboxed code. (The sync pool is used rather than
`AsyncMonty`: it is faster per call here, and pydantic-monty 1.4.0's `AsyncMonty` aborts the interpreter at
exit in about a third of runs.)
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pydantic_monty
from pydantic_monty import Monty, MontyCrashedError, MontyError, MontySyntaxError

from .output import CappedBuffer, result
from .types import TIMEOUT_EXIT_CODE, BackendReport, ExecutionResult, Layer, Limits

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


class Backend:
    """Runs Python snippets in pydantic-monty sessions, one fresh session per execution."""

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
        ],
    )
