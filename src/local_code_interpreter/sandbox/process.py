"""The `subprocess` back end: full CPython in confined children forked from a pristine template.

A one-shot run takes a spare child (forked and confined before the request), gives it one cell and ends it;
a session keeps its child. `supervisor.py` runs the children, `template.py` forks them. There are two templates,
each with its own supervisor and spares: the warm one (NumPy, pandas, matplotlib) and the lean one (the standard
library); the code a child runs first picks its template (`startup.py`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import time

from . import files, isolation, landlock, startup
from .child import FONT_CACHE, MATPLOTLIB_HOME
from .supervisor import CHILD_DESCRIPTORS, FORK_DESCRIPTORS, Child, Supervisor, result_fields
from .types import (BackendReport, ExecutionResult, FileInfo, Limits, SandboxUnavailable)

NAME = "subprocess"
GRACE_SECONDS = 1.0
SPARES = 2  # confined children each template keeps ready for one-shot runs...
# ...and for new sessions: as many as may start at once by default (LCI_MAX_CONCURRENCY), so a burst of new
# conversations, or new conversations back to back faster than a taken spare is replaced
# (`supervisor.SESSION_REFILL_DELAY_SECONDS`), finds one each. With 2, 9-14 % of new conversations back to back
# (3-4 ms apart) forked their own child on their path: p90 0.5-0.8 ms higher (`bench_ab.py`). A spare holds about
# 2.2 MiB of its own.
SESSION_SPARES = 4
TEMPLATES = 2  # warm and lean
_FONT_CACHE = re.compile(re.escape(MATPLOTLIB_HOME) + "/" + FONT_CACHE.pattern)


def descriptors(max_sessions: int, max_concurrency: int) -> int:
    """Descriptors the server may hold with `max_sessions` sessions and `max_concurrency` runs or session starts at
    once (`Bounded`): per child its four pipe ends and its directory (`supervisor.Child`), for every session, every
    run in flight and the spares of both kinds of both templates; per fork in flight (those runs and starts, and
    one refill of each kind of spare of each template) the child's four ends until the template has them; per
    template its root directory's lock and its socket. Evicted sessions are closed in the background:
    `max_concurrency` more children cover them."""
    children = max_sessions + 2 * max_concurrency + TEMPLATES * (SPARES + SESSION_SPARES)
    return CHILD_DESCRIPTORS * children + FORK_DESCRIPTORS * (max_concurrency + 2 * TEMPLATES) + 2 * TEMPLATES


class Backend:
    """Two supervisors (warm and lean, each with its template), started on first use and again if a template
    ever dies. `supervisor` is the warm one's."""

    name = NAME

    def __init__(self, limits: Limits, language: str = "python", spares: int = SPARES,
                 session_spares: int = SESSION_SPARES, grace_seconds: float = GRACE_SECONDS):
        self.limits = limits
        self.language = language
        self.grace_seconds = grace_seconds
        self.supervisor = Supervisor(limits, spares=spares, session_spares=session_spares,
                                     grace_seconds=grace_seconds)
        self.lean = Supervisor(limits, spares=spares, session_spares=session_spares, grace_seconds=grace_seconds,
                               warm_peer=self.supervisor)
        self._sessions: set[SubprocessSession] = set()

    @property
    def supervisors(self) -> tuple[Supervisor, Supervisor]:
        return self.supervisor, self.lean

    def _for(self, code: str | None) -> Supervisor:
        return self.supervisor if startup.needs_libraries(code) else self.lean

    async def start(self) -> None:
        """Start the templates now (and fork the spares) rather than on the first execution."""
        for supervisor in self.supervisors:
            await supervisor.start()
            supervisor.prefill(self.limits, session=False)
            supervisor.prefill(self.limits, session=True)

    def _check(self, language: str | None) -> None:
        language = language or self.language
        if language != "python":
            raise SandboxUnavailable(f"the subprocess sandbox runs Python only, not {language}")

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        self._check(language)
        started = time.perf_counter()
        child = await self._for(code).child(self.limits, session=False)
        try:
            cell = await child.run(code, grace_seconds=0)
        except asyncio.CancelledError:  # the caller went away: its execution ends before its slot is free
            await asyncio.shield(child.gone())
            raise
        finally:
            child.supervisor.release(child)  # killed now; its directory removed in the background
        fields = result_fields(cell, self.limits, session=False, grace_seconds=0)
        return ExecutionResult(sandbox=NAME, duration_ms=round((time.perf_counter() - started) * 1000, 3), **fields)

    async def open_session(self, language: str | None = None, limits: Limits | None = None,
                           first_cell: str | None = None) -> "SubprocessSession":
        """`first_cell`, when known, picks the template (`startup.py`); without it the session starts warm."""
        self._check(language)
        limits = limits or self.limits
        child = await self._for(first_cell).child(limits, session=True)
        session = SubprocessSession(self, child, limits)
        self._sessions.add(session)
        return session

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.close()
        for supervisor in self.supervisors:
            await supervisor.close()


class SubprocessSession:
    """One confined child kept between executions, with its own directory (see `types.Session`)."""

    sandbox = NAME

    def __init__(self, backend: Backend, child: Child, limits: Limits):
        self.id = secrets.token_hex(8)
        self.backend, self.child, self.limits = backend, child, limits
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and self.child.alive

    @property
    def directory(self) -> str:
        return self.child.scratch

    async def run(self, code: str) -> ExecutionResult:
        async with self._lock:
            if not self.alive:
                raise SandboxUnavailable("this session has ended; open a new one")
            started = time.perf_counter()
            try:
                cell = await self.child.run(code, self.backend.grace_seconds)
            except asyncio.CancelledError:  # the caller went away: the session ends with its execution
                await asyncio.shield(self.child.gone())
                raise
            fields = result_fields(cell, self.limits, session=True, grace_seconds=self.backend.grace_seconds)
            if not self.child.alive:
                self.child.supervisor.release(self.child)
            return ExecutionResult(sandbox=NAME, duration_ms=round((time.perf_counter() - started) * 1000, 3),
                                   **fields)

    # Files: through files.py, relative to the directory's descriptor, never following a symlink ------------
    def _directory(self) -> int:
        if self._closed:
            raise SandboxUnavailable("this session has ended")
        return self.child.dirfd

    async def upload(self, name: str, data: bytes) -> FileInfo:
        """Counts against the session's disk quota (`QuotaExceeded`, nothing left behind); owned by the code's uid."""
        name = files.check_name(name)
        uid = isolation.NOBODY if isolation.drops_root() else None
        async with self._lock:  # not while a cell runs: what it writes counts too
            directory = self._directory()
            with self.child.uploading():
                return await asyncio.to_thread(files.write, directory, name, data, uid=uid,
                                               quota_bytes=self.limits.scratch_mb * 1024 * 1024)

    async def files(self) -> list[FileInfo]:
        """Every file in the directory but matplotlib's font cache, which a lean child writes into
        `child.MATPLOTLIB_HOME` when its code first imports matplotlib (as matplotlib keeps it in a home
        directory): set-up, not anything the code made. It can still be read by name."""
        return [info for info in await asyncio.to_thread(files.listing, self._directory())
                if not _FONT_CACHE.fullmatch(info.name)]

    async def read(self, name: str) -> bytes:
        name = files.check_name(name)
        return await asyncio.to_thread(files.read, self._directory(), name)

    async def open_file(self, name: str) -> files.OpenedFile:
        name = files.check_name(name)
        return await asyncio.to_thread(files.open_file, self._directory(), name)

    async def delete(self, name: str) -> None:
        name = files.check_name(name)
        await asyncio.to_thread(files.delete, self._directory(), name)

    def interrupt(self, reason: str) -> None:
        """Kill the session's interpreter now, whatever it runs: the running execution ends and says `reason`."""
        if self.child.alive:
            self.child.kill(reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.backend._sessions.discard(self)
        await self.child.dispose()


def report(limits: Limits) -> BackendReport:
    abi = landlock.abi_version()
    linux = sys.platform.startswith("linux")
    layers = isolation.detect(limits, abi)
    return BackendReport(
        name=NAME,
        usable=linux and hasattr(os, "fork"),
        detail="CPython " + sys.version.split()[0] + (
            " in confined children forked from a pristine template, warm (NumPy, pandas, matplotlib) or lean (the "
            "standard library: code that imports nothing else starts there: about 40 % less CPU per child); "
            "spare children ready before each request; sessions keep their child" if linux else ": needs Linux"),
        languages=("python",),
        layers=layers,
    )
