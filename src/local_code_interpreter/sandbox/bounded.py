"""A concurrency gate in front of any back end: the bound holds, waiting is bounded, a gone caller stops.

- At most `slots` executions run at once, one-shot runs, session executions and session starts (a fork each)
  alike, so a burst of new conversations forks no more children at once than a burst of runs. A slot is given back
  only when the back end's `run` returned, and the back ends stop (and wait for) an execution whose caller
  was cancelled before they return: a dropped streamed request cannot leave its execution running while
  its slot serves someone else.
- Waiting for a slot is limited: at most `queue_length` callers wait, each at most `queue_timeout` seconds;
  past either, `SandboxBusy` (HTTP 429) says so.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from .types import ExecutionResult, Limits, Sandbox, SandboxBusy


class Bounded:
    """At most `slots` executions at once on the wrapped back end; a bounded queue waits for them."""

    def __init__(self, backend: Sandbox, slots: int, queue_timeout: float = 30.0, queue_length: int = 64):
        self.backend, self.name = backend, backend.name
        self.slots, self.queue_timeout, self.queue_length = slots, queue_timeout, queue_length
        self._slots = asyncio.Semaphore(slots)
        self._waiting = 0
        self.running = 0  # executions inside the back end right now (never above `slots`)

    async def start(self) -> None:
        start = getattr(self.backend, "start", None)
        if start is not None:
            await start()

    @asynccontextmanager
    async def slot(self):
        if self._slots.locked():
            if self._waiting >= self.queue_length:
                raise SandboxBusy(f"all {self.slots} execution slots are busy and {self._waiting} callers are "
                                  "already waiting; retry later")
            self._waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
            except asyncio.TimeoutError:
                raise SandboxBusy(f"no execution slot became free within {self.queue_timeout:g} s; "
                                  "retry later") from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        async with self.slot():
            return await self.backend.run(code, language)

    async def open_session(self, language: str | None = None, limits: Limits | None = None):
        open_session = getattr(self.backend, "open_session", None)
        if open_session is None:
            from .types import SandboxUnavailable

            raise SandboxUnavailable(f"the {self.name} sandbox cannot keep sessions")
        async with self.slot():
            session = await (open_session(language, limits) if limits is not None else open_session(language))
        return BoundedSession(session, self)

    async def close(self) -> None:
        await self.backend.close()


class BoundedSession:
    """A session whose executions take a slot of the gate like one-shot runs; everything else passes through."""

    def __init__(self, session, gate: Bounded):
        self._session, self._gate = session, gate

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    @property
    def alive(self) -> bool:
        return self._session.alive

    async def run(self, code: str) -> ExecutionResult:
        async with self._gate.slot():
            return await self._session.run(code)
