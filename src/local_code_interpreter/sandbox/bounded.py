"""A concurrency gate in front of any back end: the bound holds, waiting is bounded, a gone caller stops.

- At most `slots` executions run at once, one-shot runs, session executions and session starts (a fork each)
  alike, so a burst of new conversations forks no more children at once than a burst of runs. A slot is given back
  only when the back end's `run` returned, and the back ends stop (and wait for) an execution whose caller
  was cancelled before they return: a dropped streamed request cannot leave its execution running while
  its slot serves someone else.
- Waiting for a slot is limited: at most `queue_length` callers wait, each at most `queue_timeout` seconds;
  past either, `SandboxBusy` (HTTP 429) says so.
- Callers share it fairly (the caller is `fair.OWNER`, set by the HTTP guard and the session manager): a freed
  slot goes to the
  waiting caller running the fewest executions (of those alike, who has waited longest), not to whoever queued
  first; and a full queue turns away the newest waiter of the caller with the most waiting rather than a caller
  with fewer. One caller keeping every slot busy and the queue full delays another caller by at most one
  execution, instead of starving it until its requests time out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from contextlib import asynccontextmanager

from ..fair import OWNER, Tally
from .types import ExecutionResult, Limits, Sandbox, SandboxBusy


class _Waiter:
    __slots__ = ("owner", "order", "future")

    def __init__(self, owner: str, order: int, future: asyncio.Future):
        self.owner, self.order, self.future = owner, order, future


class Bounded:
    """At most `slots` executions at once on the wrapped back end; a bounded queue, fair between callers, waits
    for them."""

    def __init__(self, backend: Sandbox, slots: int, queue_timeout: float = 30.0, queue_length: int = 64):
        self.backend, self.name = backend, backend.name
        self.slots, self.queue_timeout, self.queue_length = slots, queue_timeout, queue_length
        self._free = slots
        self._queues: dict[str, deque[_Waiter]] = {}  # per caller, oldest first
        self._waiting = 0
        self._order = itertools.count()
        self._running = Tally()  # executions inside the back end right now, per caller and in all

    @property
    def running(self) -> int:
        """Executions inside the back end right now (never above `slots`)."""
        return self._running.total

    async def start(self) -> None:
        start = getattr(self.backend, "start", None)
        if start is not None:
            await start()

    @asynccontextmanager
    async def slot(self):
        owner = OWNER.get()
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            await self._wait(owner)
        self._running.add(owner, 1)
        try:
            yield
        finally:
            self._running.add(owner, -1)
            self._hand_on()

    async def _wait(self, owner: str) -> None:
        """Until a slot is handed to this caller (`_hand_on`); SandboxBusy past the queue's length or timeout."""
        if self._waiting >= self.queue_length and not self._turn_away_for(owner):
            raise SandboxBusy(f"all {self.slots} execution slots are busy and {self._waiting} callers are "
                              "already waiting; retry later")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(owner, next(self._order), loop.create_future())
        self._queues.setdefault(owner, deque()).append(waiter)
        self._waiting += 1
        timer = loop.call_later(self.queue_timeout, self._time_out, waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self._hand_on()  # handed a slot just as it was cancelled: it passes on
            else:
                self._dequeue(waiter)
            raise
        finally:
            timer.cancel()

    def _hand_on(self) -> None:
        """A slot is free: to the waiting caller running the fewest executions, of those alike the one that has
        waited longest; else it stays free."""
        if not self._waiting:
            self._free += 1
            return
        queue = min(self._queues.values(), key=lambda q: (self._running.of(q[0].owner), q[0].order))
        waiter = queue[0]
        self._dequeue(waiter)
        waiter.future.set_result(None)

    def _turn_away_for(self, owner: str) -> bool:
        """The queue is full: turn away the newest waiter of the caller with the most waiting, if that caller has
        more waiting than `owner` does. False when `owner` itself waits the most (it is the one turned away)."""
        if not self._queues:  # a queue of length 0: nobody waits, ever
            return False
        mine = len(self._queues.get(owner, ()))
        most = max(self._queues.values(), key=len)
        if len(most) <= mine:
            return False
        waiter = most[-1]
        self._dequeue(waiter)
        waiter.future.set_exception(SandboxBusy(
            f"all {self.slots} execution slots are busy and the queue is full; this caller had the most requests "
            "waiting, so its newest gave way to another caller's: retry later"))
        return True

    def _time_out(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            self._dequeue(waiter)
            waiter.future.set_exception(SandboxBusy(
                f"no execution slot became free within {self.queue_timeout:g} s; retry later"))

    def _dequeue(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.owner)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        self._waiting -= 1
        if not queue:
            del self._queues[waiter.owner]

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        async with self.slot():
            return await self.backend.run(code, language)

    async def open_session(self, language: str | None = None, limits: Limits | None = None,
                           first_cell: str | None = None):
        open_session = getattr(self.backend, "open_session", None)
        if open_session is None:
            from .types import SandboxUnavailable

            raise SandboxUnavailable(f"the {self.name} sandbox cannot keep sessions")
        extra = {"limits": limits} if limits is not None else {}
        if first_cell is not None:
            extra["first_cell"] = first_cell
        async with self.slot():
            session = await open_session(language, **extra)
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
