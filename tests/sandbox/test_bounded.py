"""The concurrency bound holds: a cancelled caller stops its execution, waiting is bounded, busy is an error."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from local_code_interpreter.fair import OWNER
from local_code_interpreter.sandbox import Limits, SandboxBusy, create_sandbox
from local_code_interpreter.sandbox.bounded import Bounded
from local_code_interpreter.sandbox.process import report
from local_code_interpreter.sandbox.types import ExecutionResult


class Slow:
    """A fake back end that counts how many runs are inside it at once; a cancelled run stops at once."""

    name = "slow"

    def __init__(self):
        self.inside = self.most = 0

    async def run(self, code, language=None):
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(float(code))
            return ExecutionResult("", "", 0)
        finally:
            self.inside -= 1

    async def close(self):
        pass


def test_queue_timeout_and_length_raise_busy():
    async def scenario():
        gate = Bounded(Slow(), slots=1, queue_timeout=0.2, queue_length=1)
        holder = asyncio.create_task(gate.run("1"))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(gate.run("0"))
        await asyncio.sleep(0.05)
        with pytest.raises(SandboxBusy, match="already waiting"):
            await gate.run("0")  # the queue (length 1) is full
        with pytest.raises(SandboxBusy, match="within 0.2 s"):
            await waiter  # waited past the queue timeout
        await holder
        assert (await gate.run("0")).exit_code == 0  # free again

    asyncio.run(scenario())


def test_cancelled_callers_never_push_the_count_past_the_bound():
    async def scenario():
        backend = Slow()
        gate = Bounded(backend, slots=2, queue_timeout=5, queue_length=100)
        tasks = [asyncio.create_task(gate.run("0.2")) for _ in range(20)]
        for task in tasks[::3]:
            await asyncio.sleep(0.01)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return backend.most, gate.running

    most, running = asyncio.run(scenario())
    assert most <= 2 and running == 0


async def _as(owner: str, gate: Bounded, code: str, finished: list | None = None):
    OWNER.set(owner)  # this task's own context: what the session manager sets around each use of a session
    result = await gate.run(code)
    if finished is not None:
        finished.append(owner)
    return result


def test_a_freed_slot_goes_to_the_waiting_caller_running_the_fewest_not_to_whoever_queued_first():
    """Mallory keeps both slots busy and five more runs queued; Alice's run, queued last, gets the first slot
    that frees (one execution's wait), not the seventh."""
    async def scenario():
        gate = Bounded(Slow(), slots=2, queue_timeout=10, queue_length=64)
        finished: list[str] = []
        mallory = [asyncio.create_task(_as("mallory", gate, "0.3", finished)) for _ in range(7)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await _as("alice", gate, "0", finished)
        waited = time.monotonic() - started
        await asyncio.gather(*mallory)
        return waited, finished, gate.running

    waited, finished, running = asyncio.run(scenario())
    assert finished.index("alice") <= 2, finished  # before any of Mallory's queued runs (her first two ran first)
    assert waited < 0.6 and running == 0


def test_a_full_queue_turns_away_the_newest_waiter_of_the_caller_waiting_the_most():
    async def scenario():
        gate = Bounded(Slow(), slots=1, queue_timeout=10, queue_length=3)
        holder = asyncio.create_task(_as("mallory", gate, "0.3"))
        await asyncio.sleep(0.02)
        queued = []
        for _ in range(3):
            queued.append(asyncio.create_task(_as("mallory", gate, "0")))
            await asyncio.sleep(0.02)
        alice = asyncio.create_task(_as("alice", gate, "0"))  # the queue is full: Mallory's newest gives way
        await asyncio.sleep(0.02)
        with pytest.raises(SandboxBusy, match="already waiting"):
            await _as("mallory", gate, "0")  # she still waits the most: she is the one turned away
        outcomes = await asyncio.gather(holder, *queued, alice, return_exceptions=True)
        return outcomes, gate.running

    outcomes, running = asyncio.run(scenario())
    holder, first, second, newest, alice = outcomes
    assert isinstance(newest, SandboxBusy) and "gave way to another caller" in str(newest)
    assert all(isinstance(r, ExecutionResult) for r in (holder, first, second, alice)) and running == 0


def test_callers_alike_are_served_in_the_order_they_queued():
    async def scenario():
        gate = Bounded(Slow(), slots=1, queue_timeout=10, queue_length=64)
        finished: list[str] = []
        holder = asyncio.create_task(_as("h", gate, "0.1"))
        await asyncio.sleep(0.02)
        tasks = []
        for n in range(5):
            tasks.append(asyncio.create_task(_as(f"c{n}", gate, "0", finished)))
            await asyncio.sleep(0.005)
        await asyncio.gather(holder, *tasks)
        return finished

    assert asyncio.run(scenario()) == [f"c{n}" for n in range(5)]


def _processes_in(directory: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)") == directory:
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not report(Limits()).usable, reason="the subprocess back end needs Linux")
def test_a_dropped_caller_stops_its_execution_before_freeing_its_slot():
    """A streamed request the client dropped is a cancelled task: its execution is killed, its slot freed only
    after its processes are gone, and the next caller runs."""

    async def scenario():
        sandbox = create_sandbox("subprocess", Limits(timeout_seconds=30), max_concurrency=1, queue_timeout_seconds=10)
        try:
            await sandbox.start()
            task = asyncio.create_task(sandbox.run("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\n"
                                                   "open('running', 'w').close()\ntime.sleep(30)"))
            backend = sandbox.backend
            directory = None
            for _ in range(200):
                await asyncio.sleep(0.05)
                busy = [child for supervisor in backend.supervisors for child in supervisor._children.values()
                        if os.path.exists(os.path.join(child.scratch, "running"))]
                if busy:
                    directory = busy[0].scratch
                    break
            assert directory, "the execution did not start"
            assert _processes_in(directory)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            left = _processes_in(directory)  # gone before the slot was given back
            started = time.monotonic()
            after = await sandbox.run("print('next')")
            return left, after, time.monotonic() - started, sandbox.running
        finally:
            await sandbox.close()

    left, after, waited, running = asyncio.run(scenario())
    assert left == [] and after.stdout == "next\n" and running == 0
    assert waited < 5
