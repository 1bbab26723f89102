"""SessionManager: one live sandbox session per (owner, identifier), with the policy around it.

A session is created on first use (`run` or `upload`), serves one execution at a time, and ends when it has been
idle too long (a background reaper, plus a check on every use), when the replica is full and it is the least
recently used idle session of the caller holding the most (`fair.py`: one caller cannot end everyone else's
sessions by opening many), when its owner closes it, when the interpreter dies, or at shutdown. Whatever ends a
session closes it, so nothing of it (process, directory, memory) outlives it. A caller whose session ended for
any reason other than its own `close` finds a `notice` in its next result saying a fresh session was started.

The global bound on concurrent executions stays in `sandbox/bounded.py`; this module bounds live *sessions*.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace

from .fair import OWNER, Holdings
from .sandbox import (
    ExecutionResult,
    FileInfo,
    Limits,
    QuotaExceeded,
    Sandbox,
    SandboxBusy,
    SandboxUnavailable,
    Session,
)
from .sandbox.files import OpenedFile

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (owner, identifier)
MAX_KEY_PART = 256
# At most this many notices for callers whose session ended while they were away (past it, the oldest of the caller
# holding the most are dropped).
_MAX_PENDING_NOTICES = 10000
# An evicted session is closed this long after the request that evicted it started its own: killing a process and
# tearing down its memory (about 1 ms of CPU here) then does not compete with that request's first cell (2 vCPUs,
# a full replica, new conversations 30 ms apart: p50 4.4 -> 3.8 ms on average over four interleaved runs).
EVICTED_CLOSE_DELAY_SECONDS = 0.015
MB = 1024 * 1024


@dataclass(frozen=True)
class SessionLimits:
    """Session policy, from `LCI_SESSION_*`, `LCI_MAX_SESSIONS` and `LCI_MAX_UPLOAD_MB` (see settings.py).

    `max_sessions` defaults to what memory allows if every session used its whole memory quota:
    (available memory - a reserve for the server) / `memory_mb`; see `default_max_sessions`.
    """

    idle_seconds: float = 1200.0
    max_sessions: int = 32
    disk_mb: int = 512
    memory_mb: int = 512
    max_upload_mb: int = 128


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            raw = handle.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None  # "max" (no cgroup limit) -> None


def memory_budget_mb() -> int | None:
    """Memory this replica may still use, in MiB: the lower of MemAvailable and the cgroup's headroom
    (v2 memory.max - memory.current, or v1 limit_in_bytes - usage_in_bytes). None when neither is readable."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) // 1024)
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # v1 reports "no limit" as a huge number
            found.append(max(0, limit - (_read_int(usage_file) or 0)) // MB)
            break
    return min(found) if found else None


def default_max_sessions(session_memory_mb: int, budget_mb: int | None = None) -> int:
    """Live sessions that fit if each used its whole memory quota, after a reserve for the server itself
    (a quarter of the budget, between 256 MiB and 1 GiB); at least 1, and 32 when memory cannot be read."""
    budget = memory_budget_mb() if budget_mb is None else budget_mb
    if budget is None:
        return 32
    reserve = max(256, min(1024, budget // 4))
    return max(1, (budget - reserve) // max(1, session_memory_mb))


@dataclass
class _Entry:
    key: Key
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: Session | None = None
    last_used: float = 0.0
    users: int = 0  # callers holding or waiting for this entry; an entry with users is never evicted or expired
    ended: bool = False  # removed from the manager; a caller still holding it must not use it
    opened_at: float = 0.0  # wall-clock time its session was opened (0: none yet)


def _check_key(key: Key) -> Key:
    if (not isinstance(key, tuple) or len(key) != 2
            or not all(isinstance(part, str) and 0 < len(part) <= MAX_KEY_PART for part in key)):
        raise ValueError(f"a session key is (owner, identifier), two non-empty strings of at most {MAX_KEY_PART} "
                         f"characters, got {key!r}")
    return key


def _with_notice(result: ExecutionResult, notice: str) -> ExecutionResult:
    if notice:
        result.notice = f"{notice} {result.notice}".strip() if result.notice else notice
    return result


class SessionManager:
    """Sessions of one sandbox back end, keyed by (owner, identifier); see the module docstring."""

    def __init__(self, sandbox: Sandbox, settings, language: str | None = None, clock=time.monotonic) -> None:
        """`settings` is a `Settings` (its `.sessions` and `.language` are used) or a `SessionLimits`."""
        self.sandbox = sandbox
        self.limits: SessionLimits = getattr(settings, "sessions", settings)
        self.language = language or getattr(settings, "language", None)
        # What each session is opened with: the execution limits, with the session's memory and disk quotas.
        base = getattr(settings, "limits", None)
        self.session_limits: Limits | None = (None if base is None else
                                              replace(base, memory_mb=self.limits.memory_mb,
                                                      scratch_mb=self.limits.disk_mb))
        self._clock = clock
        self._entries: Holdings[_Entry] = Holdings()  # each owner's least recently used first (see fair.py)
        self._notices: Holdings[str] = Holdings()  # bounded like the sessions: the most-holding caller's go first
        self._reaper: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()  # sessions being closed in the background (expired, evicted)
        self._closed = False
        self._counts = {"created": 0, "expired": 0, "evicted": 0, "lost": 0, "closed": 0}

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the idle reaper (idempotent)."""
        if self._reaper is None or self._reaper.done():
            self._closed = False
            self._reaper = asyncio.create_task(self._reap_forever(), name="session-reaper")

    async def close_all(self) -> None:
        """Stop the reaper and close every session (shutdown)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            entry.ended = True
            await self._close_session(entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def stats(self) -> dict:
        """Live and busy sessions, the limit, and how many sessions were created/expired/evicted/lost/closed."""
        busy = sum(1 for entry in self._entries.values() if entry.users)
        return {"live": len(self._entries), "busy": busy, "max_sessions": self.limits.max_sessions, **self._counts}

    def opened_at(self, key: Key) -> float | None:
        """When the key's live session was opened (wall clock); None when it has none. Creates nothing."""
        entry = self._entries.get(_check_key(key))
        return entry.opened_at if entry is not None and entry.session is not None and not entry.ended else None

    # -- the API ---------------------------------------------------------------------------------------------

    async def run(self, key: Key, code: str) -> ExecutionResult:
        """Run `code` in the key's session (created on first use). SandboxBusy when the replica is full of busy
        sessions; SandboxUnavailable when the back end cannot keep sessions."""
        for _attempt in range(2):
            async with self._use(key, create=True, first_cell=code) as (session, notice):
                try:
                    result = await session.run(code)
                except SandboxUnavailable:
                    if session.alive:
                        raise
                    continue  # it died just before this cell ran: leaving `_use` replaces it, then run again
            return _with_notice(result, notice)
        raise SandboxUnavailable("the sandbox could not start a session that stays alive")

    async def upload(self, key: Key, name: str, data: bytes) -> FileInfo:
        """Write a file into the key's session directory (created on first use). QuotaExceeded past the upload
        cap or the session's disk quota; InvalidFileName for a name that could escape the directory."""
        cap = self.limits.max_upload_mb * MB
        if len(data) > cap:
            raise QuotaExceeded(f"the file is {len(data)} bytes; uploads are capped at {self.limits.max_upload_mb} MB")
        async with self._use(key, create=True) as (session, _notice):
            existing = await session.files()
            used = sum(info.size for info in existing if info.name != name)
            quota = self.limits.disk_mb * MB
            if used + len(data) > quota:
                raise QuotaExceeded(f"the session directory would hold {used + len(data)} bytes; its disk quota is "
                                    f"{self.limits.disk_mb} MB")
            return await session.upload(name, data)

    async def files(self, key: Key) -> list[FileInfo]:
        """The files of the key's session directory; [] when the key has no session (none is created)."""
        async with self._use(key, create=False) as (session, _notice):
            return [] if session is None else await session.files()

    async def read(self, key: Key, name: str) -> bytes:
        """A file's bytes; FileNotFoundError when the key has no session or no such file."""
        async with self._use(key, create=False) as (session, _notice):
            if session is None:
                raise FileNotFoundError(name)
            return await session.read(name)

    async def open_file(self, key: Key, name: str) -> OpenedFile:
        """A file opened for a download (the caller closes it), as `read` finds it. The session is not held while
        the file is sent: its executions and its end do not wait for a slow client."""
        async with self._use(key, create=False) as (session, _notice):
            if session is None:
                raise FileNotFoundError(name)
            return await session.open_file(name)

    async def delete(self, key: Key, name: str) -> None:
        """Remove a file; FileNotFoundError when the key has no session or no such file."""
        async with self._use(key, create=False) as (session, _notice):
            if session is None:
                raise FileNotFoundError(name)
            await session.delete(name)

    async def close(self, key: Key, interrupt: bool = False) -> bool:
        """End the key's session (after any execution in it finishes); False when it had none.

        With `interrupt` (the session or its conversation was deleted), an execution running in it is killed first,
        so the close does not wait for it: on back ends that can kill one (`interrupt(reason)` on the session);
        others wait."""
        entry = self._entries.get(_check_key(key))
        if entry is None:
            return False
        stop = getattr(entry.session, "interrupt", None) if interrupt and entry.lock.locked() else None
        if stop is not None:
            stop("deleted")
        entry.users += 1
        try:
            async with entry.lock:
                if entry.ended:
                    return False
                self._forget(entry)
                self._notices.pop(entry.key, None)  # ended by its owner: no word owed about an earlier loss
                self._counts["closed"] += 1
                await self._close_session(entry)
                return True
        finally:
            entry.users -= 1

    # -- policy ----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _use(self, key: Key, create: bool, first_cell: str | None = None):
        """Hold the key's entry lock and yield (live session or None, notice for the caller). Whatever the sandbox
        does meanwhile is on the key's owner's behalf (`fair.OWNER`: the execution gate shares its slots by it).
        A session opened here is told `first_cell`, the code it runs first (None: unknown, as for an upload)."""
        key = _check_key(key)
        acting = OWNER.set(key[0])
        try:
            async with self._entry(key, create, first_cell) as found:
                yield found
        finally:
            OWNER.reset(acting)

    @contextlib.asynccontextmanager
    async def _entry(self, key: Key, create: bool, first_cell: str | None):
        if self._closed:
            raise SandboxBusy("the server is shutting down; retry")
        while True:
            entry = self._entries.get(key)
            if entry is not None and self._expired(entry) and not entry.users:
                self._expire(entry)
                entry = None
            if entry is None:
                if not create:
                    yield None, ""
                    return
                entry = self._admit(key)
            entry.users += 1
            try:
                async with entry.lock:
                    if entry.ended:  # evicted or closed while we waited for the lock: start over
                        continue
                    notice = ""
                    if entry.session is not None and not entry.session.alive:  # died while idle
                        await self._lose(entry)
                    if entry.session is None:
                        if not create:
                            yield None, ""
                            return
                        await self._open(entry, first_cell)
                        notice = self._notices.pop(key, "")  # after a successful open, so a failure keeps it
                    self._entries.touch(key)
                    try:
                        yield entry.session, notice
                    finally:
                        entry.last_used = self._clock()
                        if entry.session is not None and not entry.session.alive:
                            # Closed now, so nothing of it lingers until the next use; this result's own notice
                            # says the state was lost, the next result says a fresh session was started.
                            await self._lose(entry)
                    return
            finally:
                entry.users -= 1

    def _admit(self, key: Key) -> _Entry:
        """A new entry for `key`. When the replica is full, an idle session gives way: the least recently used of
        the caller holding the most sessions, never one of a caller holding fewer than `key`'s owner (fair.py).
        One caller opening conversations fast ends its own oldest sessions, not everyone else's."""
        if len(self._entries) >= self.limits.max_sessions:
            victim = next((entry for _, entry in self._entries.give_way(key[0])
                           if not entry.users and not entry.lock.locked()), None)
            if victim is None:
                if any(not entry.users and not entry.lock.locked() for entry in self._entries.values()):
                    raise SandboxBusy(f"this replica is full ({self.limits.max_sessions} sessions): yours and those "
                                      "of callers holding as many are all busy, and the idle ones belong to callers "
                                      "holding fewer, which are not ended for yours; retry when one of yours is done")
                raise SandboxBusy(f"all {self.limits.max_sessions} sessions on this replica are busy; retry shortly")
            self._forget(victim)
            self._counts["evicted"] += 1
            self._note(victim.key, "The previous session of this conversation was closed to make room for others "
                                   "(least recently used), so its variables and files are gone; a fresh session "
                                   "was started.")
            self._close_later(victim, EVICTED_CLOSE_DELAY_SECONDS)
            log.debug("evicted the least recently used idle session of the caller holding the most (replica full: "
                      "%d)", self.limits.max_sessions)
        entry = _Entry(key, last_used=self._clock())
        self._entries[key] = entry
        return entry

    async def _open(self, entry: _Entry, first_cell: str | None) -> None:
        extra = {} if self.session_limits is None else {"limits": self.session_limits}
        if first_cell is not None:
            extra["first_cell"] = first_cell  # the back end may pick how to start by it
        try:
            entry.session = await self.sandbox.open_session(self.language, **extra)
            entry.opened_at = time.time()
        except BaseException:
            self._forget(entry)  # nothing was opened: free the slot
            raise
        self._counts["created"] += 1

    def _expired(self, entry: _Entry) -> bool:
        return self._clock() - entry.last_used > self.limits.idle_seconds

    def _expire(self, entry: _Entry) -> None:
        self._forget(entry)
        self._counts["expired"] += 1
        if entry.session is not None:
            self._note(entry.key, f"The previous session of this conversation expired after "
                                  f"{self.limits.idle_seconds:g} s idle, so its variables and files are gone; "
                                  "a fresh session was started.")
        self._close_later(entry)

    def _forget(self, entry: _Entry) -> None:
        entry.ended = True
        if self._entries.get(entry.key) is entry:
            self._entries.pop(entry.key)

    def _note(self, key: Key, notice: str) -> None:
        self._notices[key] = notice
        while len(self._notices) > _MAX_PENDING_NOTICES:  # a caller ending its own sessions by the thousand
            self._notices.pop(next(self._notices.give_way(key[0]))[0])  # drops its own notices, not others'

    def _close_later(self, entry: _Entry, delay: float = 0.0) -> None:
        task = asyncio.get_running_loop().create_task(self._close_session(entry, delay))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _lose(self, entry: _Entry) -> None:
        """The session died (crash, timeout past the grace period, memory quota): close it, tell the next caller."""
        await self._close_session(entry)
        self._counts["lost"] += 1
        self._note(entry.key, "The previous session of this conversation had ended (its state was lost); "
                              "a fresh session was started.")

    async def _close_session(self, entry: _Entry, delay: float = 0.0) -> None:
        session, entry.session = entry.session, None
        if session is None:
            return
        if delay:
            await asyncio.sleep(delay)
        try:
            await session.close()
        except Exception:  # noqa: BLE001 - closing must go on for the others; the back end logs its own detail
            log.exception("closing session %s failed", getattr(session, "id", "?"))

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self.limits.idle_seconds / 2, 30.0))
        while True:
            await asyncio.sleep(interval)
            self.reap()

    def reap(self) -> int:
        """Expire every idle session past the idle limit now; returns how many (the reaper calls this)."""
        stale = [entry for entry in self._entries.values()
                 if not entry.users and not entry.lock.locked() and self._expired(entry)]
        for entry in stale:
            self._expire(entry)
        return len(stale)
