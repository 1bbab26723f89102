"""SessionManager policy against the real monty back end (and the subprocess back end where it keeps sessions):
per-key sessions, owner scoping, idle expiry, LRU eviction with a notice, busy error, dead-session replacement,
serialised executions, upload cap and disk quota, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import time

import pytest

from local_code_interpreter.sandbox import (
    FileInfo,
    Limits,
    QuotaExceeded,
    SandboxBusy,
    SandboxUnavailable,
    create_sandbox,
)
from local_code_interpreter.sessions import SessionLimits, SessionManager, default_max_sessions, memory_budget_mb

LIMITS = Limits(timeout_seconds=1.0, memory_mb=64, max_output_bytes=4096)


class Recording:
    """The real back end, remembering the sessions it opened so a test can check they were closed."""

    def __init__(self, sandbox):
        self.sandbox, self.name, self.opened = sandbox, sandbox.name, []

    async def run(self, code, language=None):
        return await self.sandbox.run(code, language)

    async def open_session(self, language=None, **extra):
        session = await self.sandbox.open_session(language, **extra)
        self.opened.append(session)
        return session


@functools.lru_cache(maxsize=None)
def session_support(backend: str) -> str | None:
    """None when the back end opens sessions here, else its own reason (measured once)."""
    async def probe():
        sandbox = create_sandbox(backend, LIMITS)
        try:
            session = await sandbox.open_session()
            result = await session.run("x = 1\nx")
            await session.close()
            return None if result.value == "1" else f"x = 1; x gave {result!r}"
        except SandboxUnavailable as error:
            return str(error)
        finally:
            await sandbox.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from inside a running event loop too
        return pool.submit(asyncio.run, probe()).result()


def backend_param(*names):
    return pytest.mark.parametrize("backend", names)


def need_sessions(backend: str) -> None:
    reason = session_support(backend)
    if reason is not None:
        pytest.skip(f"the {backend} back end keeps no sessions here: {reason}")


@contextlib.asynccontextmanager
async def manager(backend="monty", limits=LIMITS, **policy):
    need_sessions(backend)
    sandbox = Recording(create_sandbox(backend, limits))
    sessions = SessionManager(sandbox, SessionLimits(**policy), language="python")
    await sessions.start()
    try:
        yield sessions, sandbox
    finally:
        await sessions.close_all()
        await sandbox.sandbox.close()


def go(coro):
    return asyncio.run(coro)


@backend_param("monty", "subprocess")
def test_one_key_keeps_state_and_owners_never_share(backend):
    async def body():
        async with manager(backend) as (sessions, sandbox):
            await sessions.run(("alice", "c1"), "x = 'alice'")
            await sessions.run(("bob", "c1"), "x = 'bob'")  # same identifier, other owner
            alice = await sessions.run(("alice", "c1"), "x")
            bob = await sessions.run(("bob", "c1"), "x")
            other = await sessions.run(("alice", "c2"), "x")
            assert (alice.value, bob.value) == ("'alice'", "'bob'")
            assert other.exit_code == 1 and "NameError" in other.stderr
            assert len(sandbox.opened) == 3 and sessions.stats()["live"] == 3
            assert all(not r.notice for r in (alice, bob, other))

    go(body())


@backend_param("monty", "subprocess")
def test_idle_session_expires_is_closed_and_the_next_call_is_told(backend):
    async def body():
        async with manager(backend, idle_seconds=0.3) as (sessions, sandbox):
            await sessions.run(("o", "c"), "x = 1")
            await asyncio.sleep(1.0)  # the reaper runs every idle/2 s
            assert sessions.stats()["live"] == 0 and sessions.stats()["expired"] == 1
            assert not sandbox.opened[0].alive  # closed by the reaper, not merely forgotten
            again = await sessions.run(("o", "c"), "x")
            assert again.exit_code == 1 and "NameError" in again.stderr
            assert "expired after 0.3 s idle" in again.notice and "fresh session" in again.notice
            follow = await sessions.run(("o", "c"), "x = 2")
            assert follow.notice == ""  # told once

    go(body())


def test_expiry_is_checked_on_use_even_between_reaper_rounds():
    async def body():
        now = [0.0]
        need_sessions("monty")
        sandbox = create_sandbox("monty", LIMITS)
        sessions = SessionManager(sandbox, SessionLimits(idle_seconds=60), language="python", clock=lambda: now[0])
        try:  # no start(): no reaper at all
            await sessions.run(("o", "c"), "x = 1")
            now[0] = 59.0
            assert (await sessions.run(("o", "c"), "x")).value == "1"
            now[0] = 59.0 + 61
            late = await sessions.run(("o", "c"), "x")
            assert "NameError" in late.stderr and "expired" in late.notice
        finally:
            await sessions.close_all()
            await sandbox.close()

    go(body())


@backend_param("monty", "subprocess")
def test_full_replica_evicts_the_least_recently_used_idle_session_with_a_note(backend):
    async def body():
        async with manager(backend, max_sessions=2) as (sessions, sandbox):
            await sessions.run(("o", "a"), "v = 'a'")
            await sessions.run(("o", "b"), "v = 'b'")
            await sessions.run(("o", "a"), "v")  # a is now the most recently used
            third = await sessions.run(("o", "c"), "v = 'c'")
            assert third.notice == ""
            assert sessions.stats()["evicted"] == 1 and sessions.stats()["live"] == 2
            await asyncio.sleep(0.05)  # the eviction closes the victim in the background
            assert not sandbox.opened[1].alive and sandbox.opened[0].alive  # b went, a stayed
            kept = await sessions.run(("o", "a"), "v")
            assert kept.value == "'a'" and kept.notice == ""
            back = await sessions.run(("o", "b"), "v")  # evicts c (now least recently used)
            assert "NameError" in back.stderr
            assert "make room" in back.notice and "fresh session" in back.notice

    go(body())


@backend_param("monty", "subprocess")
def test_a_caller_opening_conversation_after_conversation_ends_its_own_oldest_not_other_callers(backend):
    """A full replica makes room at the expense of the caller holding the most sessions: Mallory opening ten
    conversations on a replica of four ends her own oldest sessions, and Alice's and Bob's keep their state."""
    async def body():
        async with manager(backend, max_sessions=4) as (sessions, sandbox):
            await sessions.run(("alice", "c"), "secret = 'alice'")
            await sessions.run(("bob", "c"), "secret = 'bob'")
            for n in range(10):
                done = await sessions.run(("mallory", f"c{n}"), f"mine = {n}")
                assert done.exit_code == 0 and not done.notice
            assert sessions.stats()["evicted"] == 8 and sessions.stats()["live"] == 4
            await asyncio.sleep(0.05)  # evicted sessions are closed in the background
            assert sandbox.opened[0].alive and sandbox.opened[1].alive  # Alice's and Bob's processes were kept
            alice = await sessions.run(("alice", "c"), "secret")
            bob = await sessions.run(("bob", "c"), "secret")
            assert (alice.value, bob.value) == ("'alice'", "'bob'") and not alice.notice and not bob.notice
            latest = await sessions.run(("mallory", "c9"), "mine")
            assert latest.value == "9" and not latest.notice  # her most recent two were kept...
            oldest = await sessions.run(("mallory", "c0"), "mine")  # ...her oldest were the ones that went
            assert "NameError" in oldest.stderr and "make room" in oldest.notice

    go(body())


@backend_param("monty", "subprocess")
def test_a_caller_whose_sessions_are_all_busy_does_not_end_an_idle_one_of_a_caller_holding_fewer(backend):
    """Mallory holds two sessions, both running; the replica (three) is full with Alice's idle one. Mallory's
    third conversation is refused as busy, saying why, and Alice's session is not ended for it."""
    async def body():
        async with manager(backend, max_sessions=3) as (sessions, _):
            await sessions.run(("alice", "c"), "secret = 'alice'")
            loops = [asyncio.create_task(sessions.run(("mallory", f"c{n}"), "n = 0\nwhile True:\n    n += 1"))
                     for n in range(2)]
            await asyncio.sleep(0.3)
            with pytest.raises(SandboxBusy, match="holding fewer"):
                await sessions.run(("mallory", "c2"), "print(1)")
            assert sessions.stats()["evicted"] == 0
            alice = await sessions.run(("alice", "c"), "secret")
            assert alice.value == "'alice'" and not alice.notice
            assert all(done.timed_out for done in await asyncio.gather(*loops))

    go(body())


def test_a_caller_keeping_every_execution_slot_busy_delays_another_by_one_execution_not_its_whole_queue():
    """Two execution slots; Mallory runs eight half-second cells at once in eight sessions. Alice's next cell gets
    the first slot that frees (the session manager runs it on her behalf, and the gate is fair between callers),
    not the ninth: she waits about one of Mallory's executions, not four."""
    need_sessions("subprocess")

    async def body():
        sandbox = create_sandbox("subprocess", Limits(timeout_seconds=10.0), max_concurrency=2)
        sessions = SessionManager(sandbox, SessionLimits(max_sessions=16), language="python")
        await sessions.start()
        try:
            await sessions.run(("alice", "c"), "x = 'alice'")
            for n in range(8):  # her sessions exist already: only the cells compete
                await sessions.run(("mallory", f"c{n}"), "import time")
            busy = [asyncio.create_task(sessions.run(("mallory", f"c{n}"), "time.sleep(0.5)")) for n in range(8)]
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            alice = await sessions.run(("alice", "c"), "x")
            waited = asyncio.get_running_loop().time() - started
            done = await asyncio.gather(*busy)
            return alice, waited, done
        finally:
            await sessions.close_all()
            await sandbox.close()

    alice, waited, done = go(body())
    assert alice.value == "'alice'" and all(result.exit_code == 0 for result in done)
    assert waited < 1.0, f"Alice waited {waited:.2f} s behind Mallory's queue"


def test_a_callers_pending_notice_outlives_another_callers_flood_of_them(monkeypatch):
    """Notices owed to callers whose session ended while they were away are bounded; past the bound, the caller
    holding the most loses its oldest. Mallory ending her own sessions by the dozen does not drop the notice that
    Alice's session expired."""
    from local_code_interpreter import sessions as sessions_module

    monkeypatch.setattr(sessions_module, "_MAX_PENDING_NOTICES", 3)

    async def body():
        now = [0.0]
        need_sessions("monty")
        sandbox = create_sandbox("monty", LIMITS)
        sessions = SessionManager(sandbox, SessionLimits(idle_seconds=60, max_sessions=2), language="python",
                                  clock=lambda: now[0])
        try:
            await sessions.run(("alice", "c"), "x = 1")
            now[0] = 100.0
            assert sessions.reap() == 1  # hers expired while she was away: she is owed a word
            for n in range(10):  # at most two live: each of hers from the third on ends her own oldest
                await sessions.run(("mallory", f"c{n}"), "1")
            assert sessions.stats()["evicted"] == 8
            late = await sessions.run(("alice", "c"), "x")
            first = await sessions.run(("mallory", "c0"), "1")
            return late, first
        finally:
            await sessions.close_all()
            await sandbox.close()

    late, first = go(body())
    assert "NameError" in late.stderr and "expired after 60 s idle" in late.notice
    assert first.notice == ""  # Mallory's oldest notices were the ones dropped


def test_a_session_that_keeps_a_cpu_busy_between_executions_is_ended_and_its_owner_told():
    """Code left running between executions (here a thread spinning forever) may use at most the execution time
    limit of CPU over the session's life: past it the idle watch ends the session, rather than let it take a CPU
    from every other caller until it expires. A session whose background work stays under that is left alone."""
    async def body():
        async with manager("subprocess", limits=Limits(timeout_seconds=1.0)) as (sessions, sandbox):
            spin = "import threading\ndef spin():\n    while True:\n        pass\n" \
                   "threading.Thread(target=spin, daemon=True).start()"
            await sessions.run(("mallory", "c"), spin)
            await sessions.run(("alice", "c"), "import threading, time\n"
                                               "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
                                               "x = 'alice'")  # a background thread that uses no CPU
            spinner, sleeper = sandbox.opened
            for _ in range(100):
                if not spinner.alive:
                    break
                await asyncio.sleep(0.1)
            ended_alive = spinner.alive
            again = await sessions.run(("mallory", "c"), "print('fresh')")
            alice = await sessions.run(("alice", "c"), "x")
            return ended_alive, again, alice, sleeper.alive

    ended_alive, again, alice, sleeper_alive = go(body())
    assert not ended_alive, "the spinning session was still alive after 10 s"
    assert again.stdout == "fresh\n" and "fresh session" in again.notice
    assert sleeper_alive and alice.value == "'alice'" and not alice.notice


SPINNER = ("import threading\ndef spin():\n    while True:\n        pass\n"
           "threading.Thread(target=spin, daemon=True).start()")
# The session's own REPL loop replaced by the code (it runs in that process): it spins between cells in the one
# thread the child has, and still reads the next cell when one comes. No thread, no process: "quiet".
REPL_SPINNER = ("import sys, time\nrepl = sys.modules['local_code_interpreter.sandbox.child']\n"
                "read = repl._read_frame\n"
                "def spinning_read(fd):\n    import os, select\n"
                "    while not select.select([fd], [], [], 0)[0]:\n        pass\n    return read(fd)\n"
                "repl._read_frame = spinning_read")


async def _until_ended(session, seconds: float, every: float | None = None, sessions=None, key=None) -> float:
    """Seconds until `session` ended (None-like inf if it did not within `seconds`); a cell every `every` s."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if not session.alive:
            return time.monotonic() - started
        if every is not None:
            await sessions.run(key, "pass")
        await asyncio.sleep(every if every is not None else 0.1)
    return float("inf")


def test_a_session_whose_code_replaced_its_own_repl_to_spin_is_ended_though_it_has_one_thread():
    """The code runs in the REPL's process, so it can make the REPL itself spin between cells: one thread, no
    process, which the idle watch used to skip as quiet. Its own CPU is read at each check now."""
    async def body():
        async with manager("subprocess", limits=Limits(timeout_seconds=1.0)) as (sessions, sandbox):
            await sessions.run(("mallory", "c"), REPL_SPINNER)
            return await _until_ended(sandbox.opened[0], 15)

    assert go(body()) < 10, "the spinning REPL was still alive after 15 s"


# The REPL replaced so that between cells it runs a process that spins for 0.25 s and reaps it before reading
# the next cell (they come every 0.3 s): no check falls in a gap without a cell, and the child has one thread.
REPL_SPAWNER = ("import subprocess, sys\nrepl = sys.modules['local_code_interpreter.sandbox.child']\n"
                "read = repl._read_frame\n"
                "spin = 'import time\\nend = time.time() + 0.25\\nwhile time.time() < end: pass'\n"
                "def spawning_read(fd):\n    subprocess.run([sys.executable, '-c', spin])\n    return read(fd)\n"
                "repl._read_frame = spawning_read")


PROCESS_SPINNER = "import subprocess, sys\nspinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])"


@pytest.mark.parametrize("attack", [SPINNER, REPL_SPAWNER, PROCESS_SPINNER],
                         ids=["a spinning thread", "a reaped spinning process", "a spinning process"])
def test_cpu_spent_between_cells_is_counted_however_often_the_session_sends_cells(attack):
    """The CPU of a session's own process (its threads, and the processes it reaped: the kernel adds theirs to
    it) and of its live processes is read by the server at every cell's start and end, so cells sent more often
    than the idle watch checks (here every 0.3 s) do not hide a spinner: the session is ended once it has used
    the limit. Before, a cell between two checks voided the interval and it spun on."""
    async def body():
        async with manager("subprocess", limits=Limits(timeout_seconds=1.0)) as (sessions, sandbox):
            await sessions.run(("mallory", "c"), attack)
            return await _until_ended(sandbox.opened[0], 20, every=0.3, sessions=sessions, key=("mallory", "c"))

    assert go(body()) < 15, "the session was still alive after 20 s of cells every 0.3 s"


def test_cpu_used_during_cells_and_many_quick_cells_do_not_count_as_idle():
    """Only gaps count: a cell keeping two threads busy (GIL-free hashing) for 1.5 s, more CPU than the 2 s limit
    in all, and 300 quick cells leave the session alive with next to nothing counted."""
    busy = ("import hashlib, threading, time\ndata = b'x' * (64 << 20)\ndef work():\n"
            "    end = time.monotonic() + 1.5\n    while time.monotonic() < end:\n"
            "        hashlib.sha256(data).digest()\n"
            "threads = [threading.Thread(target=work) for _ in range(2)]\n[t.start() for t in threads]\n"
            "[t.join() for t in threads]\nx = 1")

    async def body():
        async with manager("subprocess", limits=Limits(timeout_seconds=2.0, memory_mb=512)) as (sessions, sandbox):
            first = await sessions.run(("alice", "c"), busy)
            for _ in range(300):
                await sessions.run(("alice", "c"), "x += 1")
            await asyncio.sleep(2.5)  # two idle checks
            last = await sessions.run(("alice", "c"), "x")
            child = sandbox.opened[0].child
            return first, last, child.idle_cpu, sandbox.opened[0].alive

    first, last, idle_cpu, alive = go(body())
    assert first.exit_code == 0 and not first.timed_out, first.stderr[-1000:]
    assert last.value == "301" and alive and not last.notice, last
    assert idle_cpu < 0.5, idle_cpu


@backend_param("monty", "subprocess")
def test_an_evicted_session_is_closed_a_moment_later_and_shutdown_waits_for_it(backend, monkeypatch):
    """The victim is closed after a short delay (so its teardown does not compete with the evicting request's
    first cell): still alive when the evicting run returns, closed once the delay has passed; a shutdown in the
    meantime still closes it before it returns. The delay is lengthened here so that "still alive" does not
    depend on how fast this machine runs the evicting cell."""
    from local_code_interpreter import sessions as sessions_module

    delay = 1.0
    monkeypatch.setattr(sessions_module, "EVICTED_CLOSE_DELAY_SECONDS", delay)

    async def body():
        async with manager(backend, max_sessions=1) as (sessions, sandbox):
            await sessions.run(("o", "a"), "v = 'a'")
            await sessions.run(("o", "b"), "v = 'b'")  # evicts a
            victim = sandbox.opened[0]
            assert sessions.stats()["evicted"] == 1
            assert victim.alive  # not closed yet: its teardown waits for the delay
            await asyncio.sleep(delay + 1.0)
            assert not victim.alive

            await sessions.run(("o", "c"), "v = 'c'")  # evicts b, and the replica shuts down at once
            victim = sandbox.opened[1]
            assert victim.alive
            await sessions.close_all()
            assert not victim.alive and not sandbox.opened[2].alive

    go(body())


def test_closing_with_interrupt_stops_the_running_execution_instead_of_waiting_for_it():
    """A deleted conversation's session ends now, not when its running code finishes (or times out): the running
    execution is killed and says why, and the close returns at once. Without `interrupt`, close waits for it."""
    async def body():
        limits = Limits(timeout_seconds=20.0)
        async with manager("subprocess", limits=limits) as (sessions, _):
            await sessions.run(("o", "a"), "x = 1")
            running = asyncio.create_task(sessions.run(("o", "a"), "import time\ntime.sleep(15)\nprint('finished')"))
            await asyncio.sleep(0.5)
            started = asyncio.get_running_loop().time()
            assert await sessions.close(("o", "a"), interrupt=True)
            closed_after = asyncio.get_running_loop().time() - started
            result = await asyncio.wait_for(running, 5)
            fresh = await sessions.run(("o", "a"), "print('x' in dir())")
            return closed_after, result, fresh

    closed_after, result, fresh = go(body())
    assert closed_after < 3.0
    assert "finished" not in result.stdout and result.exit_code != 0
    assert "deleted" in result.stderr and "deleted" in result.notice
    assert fresh.stdout == "False\n" and not fresh.notice  # the owner ended it: nothing to report as lost


@backend_param("monty", "subprocess")
def test_all_sessions_busy_is_a_clear_busy_error(backend):
    async def body():
        async with manager(backend, max_sessions=1) as (sessions, _):
            long = asyncio.create_task(sessions.run(("o", "a"), "n = 0\nwhile True:\n    n += 1"))
            await asyncio.sleep(0.2)
            with pytest.raises(SandboxBusy, match="busy; retry"):
                await sessions.run(("o", "b"), "print(1)")
            done = await long
            assert done.timed_out
            ok = await sessions.run(("o", "b"), "print(1)")  # a is idle now: evicted, b runs
            assert ok.stdout == "1\n" and sessions.stats()["evicted"] == 1

    go(body())


@backend_param("monty", "subprocess")
def test_executions_in_one_session_are_serialised(backend):
    async def body():
        async with manager(backend, limits=Limits(timeout_seconds=10.0)) as (sessions, _):
            await sessions.run(("o", "a"), "n = 0")
            count = "for i in range(20000):\n    n += 1"
            await asyncio.gather(*(sessions.run(("o", "a"), count) for _ in range(4)))
            assert (await sessions.run(("o", "a"), "n")).value == "80000"

    go(body())


# How each real back end loses a session: monty's pool kills a worker whose single huge big-integer operation
# never reaches Monty's own time check; a subprocess session's interpreter exits.
KILLERS = {"monty": "y = 10 ** (10 ** 8)", "subprocess": "import os\nos._exit(3)"}


@backend_param("monty", "subprocess")
def test_a_dead_session_is_replaced_on_next_use_with_a_notice(backend):
    async def body():
        async with manager(backend, limits=Limits(timeout_seconds=0.3)) as (sessions, sandbox):
            await sessions.run(("o", "a"), "x = 1")
            died = await sessions.run(("o", "a"), KILLERS[backend])
            assert died.exit_code != 0 and "lost" in died.notice
            assert not sandbox.opened[0].alive and sessions.stats()["lost"] == 1
            fresh = await sessions.run(("o", "a"), "x")
            assert "NameError" in fresh.stderr
            assert "had ended" in fresh.notice and "fresh session was started" in fresh.notice
            assert len(sandbox.opened) == 2 and sandbox.opened[1].alive

    go(body())


def test_upload_cap_is_checked_before_any_session_is_made():
    async def body():
        async with manager("monty", max_upload_mb=1) as (sessions, sandbox):
            with pytest.raises(QuotaExceeded, match="capped at 1 MB"):
                await sessions.upload(("o", "a"), "big.bin", b"\0" * (1024 * 1024 + 1))
            assert sandbox.opened == [] and sessions.stats()["live"] == 0

    go(body())


def test_monty_sessions_refuse_uploads_clearly():
    async def body():
        async with manager("monty") as (sessions, _):
            with pytest.raises(SandboxUnavailable, match="no file system"):
                await sessions.upload(("o", "a"), "a.csv", b"1,2\n")
            assert await sessions.files(("o", "a")) == []

    go(body())


@backend_param("subprocess")
def test_files_round_trip_and_the_disk_quota_counts_what_is_there(backend):
    import importlib.util
    if importlib.util.find_spec("local_code_interpreter.sandbox.files") is None:
        pytest.skip("the subprocess back end's session files (sandbox/files.py) are not on this branch yet")

    async def body():
        async with manager(backend, disk_mb=1, max_upload_mb=1) as (sessions, _):
            info = await sessions.upload(("o", "a"), "data.csv", b"a,b\n1,2\n")
            assert isinstance(info, FileInfo) and (info.name, info.size) == ("data.csv", 8)
            read = await sessions.run(("o", "a"), "print(open('data.csv').read().split()[1])")
            assert read.stdout == "1,2\n"
            assert await sessions.read(("o", "a"), "data.csv") == b"a,b\n1,2\n"
            await sessions.upload(("o", "a"), "half.bin", b"\0" * (600 * 1024))
            with pytest.raises(QuotaExceeded, match="disk quota"):
                await sessions.upload(("o", "a"), "more.bin", b"\0" * (600 * 1024))
            await sessions.upload(("o", "a"), "half.bin", b"\0" * (700 * 1024))  # replacing counts only once
            await sessions.delete(("o", "a"), "half.bin")
            assert [f.name for f in await sessions.files(("o", "a"))] == ["data.csv"]
            with pytest.raises(FileNotFoundError):
                await sessions.read(("o", "a"), "half.bin")

    go(body())


def test_unknown_keys_make_no_session_and_bad_keys_are_refused():
    async def body():
        async with manager("monty") as (sessions, sandbox):
            assert await sessions.files(("o", "nobody")) == []
            with pytest.raises(FileNotFoundError):
                await sessions.read(("o", "nobody"), "a.txt")
            with pytest.raises(FileNotFoundError):
                await sessions.delete(("o", "nobody"), "a.txt")
            assert await sessions.close(("o", "nobody")) is False
            assert sandbox.opened == []
            for bad in (("", "c"), ("o", ""), ("o",), "o/c", ("o", "c" * 300), (1, "c")):
                with pytest.raises(ValueError, match="session key"):
                    await sessions.run(bad, "print(1)")

    go(body())


def test_close_ends_the_session_and_close_all_ends_every_one():
    async def body():
        async with manager("monty") as (sessions, sandbox):
            await sessions.run(("o", "a"), "x = 1")
            await sessions.run(("o", "b"), "x = 2")
            assert await sessions.close(("o", "a")) is True
            assert not sandbox.opened[0].alive and sessions.stats()["closed"] == 1
            again = await sessions.run(("o", "a"), "x")
            assert "NameError" in again.stderr and again.notice == ""  # the owner closed it: no surprise to report
            await sessions.close_all()
            assert not any(session.alive for session in sandbox.opened) and sessions.stats()["live"] == 0
            with pytest.raises(SandboxBusy, match="shutting down"):
                await sessions.run(("o", "a"), "x")

    go(body())


def test_a_back_end_without_sessions_is_reported_not_faked():
    async def body():
        class NoSessions:
            name = "plain"

            async def run(self, code, language=None):
                raise AssertionError

        from local_code_interpreter.sandbox.bounded import Bounded
        sessions = SessionManager(Bounded(NoSessions(), 1), SessionLimits())
        with pytest.raises(SandboxUnavailable, match="cannot keep sessions"):
            await sessions.run(("o", "a"), "x = 1")
        assert sessions.stats()["live"] == 0  # the failed creation frees its slot

    go(body())


def test_default_max_sessions_is_sized_to_memory():
    assert default_max_sessions(512, budget_mb=24 * 1024) == (24 * 1024 - 1024) // 512
    assert default_max_sessions(512, budget_mb=2048) == (2048 - 512) // 512  # reserve: a quarter
    assert default_max_sessions(512, budget_mb=300) == 1  # never zero
    budget = memory_budget_mb()
    assert budget is None or budget > 0
    assert default_max_sessions(256) >= 1


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"  # a zombie holds nothing but its pid
    except FileNotFoundError:
        return True


def test_nothing_of_an_ended_subprocess_session_outlives_it():
    need_sessions("subprocess")

    async def body():
        async with manager("subprocess", max_sessions=2, idle_seconds=0.5) as (sessions, sandbox):
            for name in ("evicted", "closed", "expired"):  # the third evicts the first (max 2)
                await sessions.run(("o", name), "open('kept.txt', 'w').write('x')")
            await sessions.close(("o", "closed"))  # then one is closed by its owner, and the last expires
            await asyncio.sleep(1.5)
            await sessions.run(("o", "after"), "pass")  # one more, then shutdown ends it
            opened = list(sandbox.opened)
            traces = [(s.child.pid, s.directory) for s in opened]
            await sessions.close_all()
            await asyncio.sleep(0.2)
            stats = sessions.stats()
            return traces, stats

    traces, stats = go(body())
    assert len(traces) == 4 and stats["evicted"] == 1 and stats["closed"] == 1 and stats["expired"] == 1
    for pid, directory in traces:
        assert pid and _gone(pid), f"session child {pid} outlived its session"
        assert not os.path.exists(directory), f"session directory {directory} outlived its session"


def test_a_session_killed_while_idle_is_replaced_and_the_next_cell_runs():
    # Real subprocess back end: the child is killed from outside between two executions, as the OOM killer
    # would. Whether the manager sees `alive` False first or the session's `run` finds the child gone
    # (SandboxUnavailable), the cell runs once in a fresh session and the caller is told.
    need_sessions("subprocess")

    async def body():
        async with manager("subprocess") as (sessions, sandbox):
            await sessions.run(("o", "a"), "x = 1")
            os.kill(sandbox.opened[0].child.pid, 9)
            await asyncio.sleep(0.3)
            return await sessions.run(("o", "a"), "print('ran')\nx"), len(sandbox.opened)

    result, opened = go(body())
    assert result.stdout == "ran\n" and "NameError" in result.stderr and opened == 2
    assert "fresh session was started" in result.notice


def test_the_session_memory_and_disk_quotas_reach_the_subprocess_child():
    from local_code_interpreter.settings import load

    need_sessions("subprocess")

    async def attempt(memory_mb: str):
        settings = load({}, {"LCI_SESSION_MEMORY_MB": memory_mb, "LCI_SESSION_DISK_MB": "2"})
        sandbox = create_sandbox("subprocess", settings.limits)
        sessions = SessionManager(sandbox, settings)
        try:
            big = await sessions.run(("o", "a"), "b = bytearray(400 * 1024 * 1024)\nprint('allocated')")
            disk = await sessions.run(("o", "a"), "open('f.bin', 'wb').write(b'0' * 3 * 1024 * 1024)")
            return big, disk
        finally:
            await sessions.close_all()
            await sandbox.close()

    small, small_disk = go(attempt("256"))
    large, _ = go(attempt("1024"))
    assert "MemoryError" in small.stderr and small.stdout == ""
    assert large.stdout == "allocated\n"  # the same code fits a larger session quota
    assert small_disk.exit_code == 1 and "File too large" in small_disk.stderr
