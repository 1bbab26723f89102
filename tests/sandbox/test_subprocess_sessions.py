"""Sessions of the `subprocess` back end: state kept, timeouts, crashes, quotas, files, and nothing left after."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace

import pytest

from local_code_interpreter.sandbox import InvalidFileName, Limits, QuotaExceeded, SandboxUnavailable
from local_code_interpreter.sandbox.process import Backend, report

from host_processes import alive

pytestmark = pytest.mark.skipif(not report(Limits()).usable, reason="the subprocess back end needs Linux")

LIMITS = Limits(timeout_seconds=3, memory_mb=256, scratch_mb=4, max_output_bytes=4096)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def backend(loop):
    backend = Backend(LIMITS, grace_seconds=0.5)
    loop.run_until_complete(backend.start())
    yield backend
    loop.run_until_complete(backend.close())


@pytest.fixture
def run(loop):
    return lambda awaitable: loop.run_until_complete(asyncio.wait_for(awaitable, 60))


@pytest.fixture
def session(backend, run):
    session = run(backend.open_session())
    yield session
    run(session.close())


def test_state_and_values_persist(session, run):
    assert run(session.run("x = 41\nimport pandas as pd")).value is None
    result = run(session.run("print(x + 1)\nx + 1"))
    assert (result.stdout, result.value, result.exit_code, result.notice) == ("42\n", "42", 0, "")
    assert run(session.run("int(pd.DataFrame({'a': [1, 2]})['a'].sum())")).value == "3"
    assert session.alive


def test_a_session_starts_with_a_fresh_processs_signals_and_streams_not_the_templates(session, run):
    """The template's SIGCHLD handler and wake-up descriptor stay behind; SIGTERM ends the code as it would any
    process; the output streams are line-buffered UTF-8 of the child's own."""
    result = run(session.run(
        "import signal, sys\n"
        "print(signal.getsignal(signal.SIGCHLD) is signal.SIG_DFL, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,"
        " signal.set_wakeup_fd(-1), sys.stdout.line_buffering, sys.stderr.line_buffering, sys.stdout.encoding)"))
    assert result.stdout == "True True -1 True True utf-8\n", result.stderr


def test_the_codes_temporary_files_work_and_stay_in_its_own_directory(backend, session, run):
    """`tempfile` must not keep the template's temporary directory (its /tmp, closed to the code by Landlock): a
    temporary file failed with PermissionError in every cell before, in sessions and one-shot runs alike."""
    code = ("import os, tempfile\n"
            "with tempfile.NamedTemporaryFile() as f, tempfile.TemporaryDirectory() as d:\n"
            "    print(os.path.dirname(f.name) == os.getcwd(), os.path.dirname(d) == os.getcwd())\n"
            "fd, path = tempfile.mkstemp()\nos.close(fd)\nos.remove(path)\n"
            "print(tempfile.gettempdir() == os.environ['TMPDIR'] == os.getcwd())")
    for result in (run(session.run(code)), run(backend.run(code))):
        assert (result.stdout, result.exit_code) == ("True True\nTrue\n", 0), result.stderr


def test_timeout_interrupts_the_cell_and_the_session_survives(session, run):
    run(session.run("kept = 'still here'"))
    result = run(session.run("import time\ntime.sleep(30)"))
    assert result.timed_out and result.exit_code == 124 and "KeyboardInterrupt" in result.stderr
    assert result.notice == "" and session.alive
    assert run(session.run("kept")).value == "'still here'"


def test_timeout_past_the_grace_period_ends_the_session(session, run):
    pid = session.child.pid
    code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass"
    result = run(session.run(code))
    assert result.timed_out and "state was lost" in result.notice and not session.alive
    assert not alive(pid)
    with pytest.raises(SandboxUnavailable):
        run(session.run("1"))


@pytest.mark.parametrize("code, how", [
    ("import os\nos._exit(7)", "status 7"),
    ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
])
def test_crash_ends_the_session_with_a_notice(session, run, code, how):
    result = run(session.run(code))
    assert how in result.notice and "state was lost" in result.notice and not session.alive


def test_memory_quota_over_the_sessions_processes(backend, run):
    session = run(backend.open_session(limits=replace(LIMITS, memory_mb=96, timeout_seconds=10)))
    try:
        code = """
import os, time
hold = []
for _ in range(3):
    if os.fork() == 0:
        block = bytearray(48 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"""
        result = run(session.run(code))
        assert "Memory quota" in result.stderr and not result.timed_out and not session.alive
        assert "state was lost" in result.notice
    finally:
        run(session.close())


FILL = """
import time
for n in range(100):
    with open(f"part{n}", "wb") as f:
        f.write(b"x" * 2**20)
    time.sleep(0.02)
"""


@pytest.mark.parametrize("how", ["thread", "process"])
def test_idle_session_is_held_to_its_quotas(backend, run, how):
    """A background thread, or a process, that keeps writing after its cell returned is stopped all the same
    (an idle session is measured unless it is quiet: one thread and no process of its own)."""
    session = run(backend.open_session())
    try:
        if how == "thread":
            code = f"import threading\nthreading.Thread(target=exec, args=({FILL!r}, {{}}), daemon=True).start()"
        else:
            code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {FILL!r}])"
        assert run(session.run(code)).exit_code == 0
        deadline = time.monotonic() + 15
        while session.alive and time.monotonic() < deadline:
            run(asyncio.sleep(0.2))
        assert not session.alive
    finally:
        run(session.close())


def test_replacing_a_file_by_upload_is_not_over_quota_while_both_exist(session, run, monkeypatch):
    """An upload writes beside the file it replaces, then renames: for that moment both are on disk. The idle
    watch (this session is measured: it has a thread) must not end the session for a moment of our own making."""
    from local_code_interpreter.sandbox import files as session_files

    big = b"x" * (LIMITS.scratch_mb * 2**20 * 6 // 10)
    run(session.upload("data.bin", big))
    assert run(session.run("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True)"
                           ".start()")).exit_code == 0
    existing = session_files._existing_bytes

    def slowly(*args):  # both files exist now: hold that for more than one idle check
        time.sleep(2.5)
        return existing(*args)

    monkeypatch.setattr(session_files, "_existing_bytes", slowly)
    info = run(session.upload("data.bin", big[:-1] + b"y"))
    assert info.size == len(big) and session.alive, session.child.killed
    assert run(session.read("data.bin")).endswith(b"y")


def test_cells_leave_no_reference_cycles_of_ours_for_the_garbage_collector(session, run):
    """Every object of a cell (its buffers, its quota watch) is freed as it ends, not by a later collection: a
    cycle per request is work for every later collection of a long-running server."""
    import gc

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
    try:
        for code in ("print(1)", "import time\ntime.sleep(0.35)"):  # the second outlives several quota checks
            assert run(session.run(code)).exit_code == 0
        gc.collect()
        ours = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("local_code_interpreter")
                or getattr(o, "__module__", "").startswith("local_code_interpreter")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


def test_a_failing_quota_check_is_reported_once_and_the_cell_still_ends(session, run, monkeypatch, caplog):
    """A check that raises (a tree vanishing mid-walk, a bug) must neither end the cell nor vanish unreported, nor
    fill the log: one warning however many checks fail."""
    def broken(self):
        raise OSError("the scratch tree could not be walked")

    monkeypatch.setattr(type(session.child), "over_quota", broken)
    with caplog.at_level("WARNING", logger="local_code_interpreter"):
        result = run(session.run("import time\ntime.sleep(0.5)\nprint('done')"))  # several checks fail
    assert (result.stdout, result.exit_code) == ("done\n", 0) and session.alive
    warnings = [r for r in caplog.records if "quota check failed" in r.getMessage()]
    assert len(warnings) == 1 and "could not be walked" in str(warnings[0].exc_info[1])


def test_the_quotas_are_still_checked_after_a_check_failed(session, run, monkeypatch):
    """A failure must not leave the rest of the execution unchecked: a later check still ends it."""
    calls = []

    def first_fails_then_over(self):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the scratch tree could not be walked")
        return "scratch"

    monkeypatch.setattr(type(session.child), "over_quota", first_fails_then_over)
    result = run(session.run("import time\ntime.sleep(5)\nprint('not stopped')"))
    assert "not stopped" not in result.stdout and result.exit_code != 0 and not result.timed_out, result


def test_files_round_trip_and_quota(session, run):
    info = run(session.upload("data/input.csv", b"a,b\n1,2\n"))
    assert (info.name, info.size) == ("data/input.csv", 8)
    result = run(session.run("import pandas as pd\nprint(pd.read_csv('data/input.csv')['b'].sum())\n"
                             "open('out.txt', 'w').write('made here')"))
    assert result.stdout == "2\n" and "out.txt" in [f.name for f in result.files]
    assert run(session.read("out.txt")) == b"made here"
    assert {f.name for f in run(session.files())} == {"data/input.csv", "out.txt"}
    run(session.delete("out.txt"))
    with pytest.raises(FileNotFoundError):
        run(session.read("out.txt"))
    with pytest.raises(QuotaExceeded):
        run(session.upload("big.bin", b"x" * (LIMITS.scratch_mb * 2**20 + 1)))
    assert "big.bin" not in {f.name for f in run(session.files())}
    for bad in ("/etc/passwd", "../escape", "a/../../b", "nul\0byte", ""):
        with pytest.raises(InvalidFileName):
            run(session.upload(bad, b"x"))
    run(session.run("import os\nos.symlink('/etc/passwd', 'link')"))
    with pytest.raises((FileNotFoundError, InvalidFileName, OSError)):
        run(session.read("link"))


def test_uploads_owned_by_the_sandbox_user(session, run):
    run(session.upload("mine.txt", b"x"))
    result = run(session.run("import os\nopen('mine.txt', 'a').write('y')\nos.remove('mine.txt')\nprint('ok')"))
    assert result.stdout == "ok\n", result.stderr


def test_sessions_do_not_see_each_other(backend, run):
    first, second = run(backend.open_session()), run(backend.open_session())
    try:
        run(first.run("secret = 'first-only'\nopen('secret.txt', 'w').write('first-only')"))
        code = f"""
import os, signal
try:
    print("ESCAPED", open({os.path.join(first.directory, 'secret.txt')!r}).read())
except OSError as error:
    print("denied read", type(error).__name__)
print("secret" in globals())
"""
        result = run(second.run(code))
        assert "ESCAPED" not in result.stdout and "False" in result.stdout
        assert "first-only" not in result.stdout
        assert first.alive and run(first.run("secret")).value == "'first-only'"
    finally:
        run(first.close())
        run(second.close())


def test_close_leaves_nothing(backend, run):
    session = run(backend.open_session())
    run(session.run("import subprocess, os\nsubprocess.Popen(['sleep', '60'])\nopen('f', 'w').write('x')\n"
                    "os.makedirs('locked/in')\nos.chmod('locked/in', 0)\nos.chmod('locked', 0)"))
    pid, directory = session.child.pid, session.directory
    run(session.close())
    assert not alive(pid) and not os.path.exists(directory) and not session.alive
    with pytest.raises(SandboxUnavailable):
        run(session.files())


def test_figures_come_back_as_png(session, run):
    result = run(session.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])"))
    assert result.images and result.images[0].media_type == "image/png"
    assert result.images[0].data.startswith(b"\x89PNG")


def test_a_session_can_still_fork_after_others_started(backend, run):
    """RLIMIT_NPROC counts the whole uid: a session opened before many others can still start a process."""
    first = run(backend.open_session())
    others = [run(backend.open_session()) for _ in range(40)]
    try:
        for other in others:
            run(other.run("1"))
        result = run(first.run("import subprocess\nprint(subprocess.run(['true']).returncode)"))
        assert result.stdout == "0\n", result.stderr
    finally:
        for session in [first, *others]:
            run(session.close())


def test_a_session_is_held_to_its_process_count(backend, run):
    session = run(backend.open_session(limits=replace(LIMITS, max_processes=4, timeout_seconds=10)))
    try:
        result = run(session.run("import subprocess, time\n"
                                 "procs = [subprocess.Popen(['sleep', '30']) for _ in range(8)]\ntime.sleep(30)"))
        assert "more than 4 processes" in result.stderr and not session.alive, result
    finally:
        run(session.close())


def test_a_one_shot_run_can_fork_after_many_sessions_started(backend, run, monkeypatch):
    """Spare children waiting while sessions start are renewed before their process limit goes stale."""
    from local_code_interpreter.sandbox import supervisor

    monkeypatch.setattr(supervisor, "SPARE_REFRESH_SECONDS", 0.5)
    run(backend.run("1"))  # the one-shot spares exist now
    sessions = [run(backend.open_session()) for _ in range(40)]
    try:
        for session in sessions:
            run(session.run("1"))
        run(asyncio.sleep(4))  # past the refresh: each spare was replaced (one a second)
        result = run(backend.run("import subprocess\nprint(subprocess.run(['true']).returncode)"))
        assert result.stdout == "0\n", result.stderr
    finally:
        for session in sessions:
            run(session.close())


def test_a_sessions_first_cell_finds_nothing_of_the_warm_up(session, run):
    """Each child runs a cell of its own before its first (child._warm_up): in a throwaway namespace, so the
    session's own starts clean and its first cell is cell 1; what it prints goes into a pipe of its own, so the
    first cell's output is its own alone, and fd 1 is the session's again for what the code starts."""
    first = run(session.run("import subprocess\nprint('mine')\nsubprocess.run(['echo', 'theirs'])\nNone"))
    assert (first.stdout, first.stderr, first.value) == ("mine\ntheirs\n", "", None), first
    names = run(session.run("sorted(n for n in globals() if not n.startswith('__'))"))
    assert names.value == "['display', 'subprocess']", names
    failed = run(session.run("1 / 0"))
    assert 'File "<cell 3>", line 1' in failed.stderr and "warm" not in failed.stderr, failed.stderr


def test_a_spare_that_died_by_itself_is_reported_and_replaced(backend, run, caplog):
    """A spare that dies before its first cell (its setup or warm-up failed, or something killed it) is not
    handed out: the caller gets a live child, and the log says which spare died and what it printed."""
    import signal

    run(asyncio.sleep(0.5))  # the spares forked at start (or after earlier tests) are in place
    spares = [child for (_limits, session), children in backend.supervisor._spares.items() if session
              for child in children]
    assert spares
    for child in spares:
        os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(not child.exited.done() for child in spares) and time.monotonic() < deadline:
        run(asyncio.sleep(0.05))
    with caplog.at_level("WARNING", logger="local_code_interpreter.sandbox.supervisor"):
        session = run(backend.open_session())
        try:
            result = run(session.run("print(6 * 7)"))
        finally:
            run(session.close())
    assert result.stdout == "42\n" and result.exit_code == 0, result
    assert "died before its first cell (status -9)" in caplog.text


def test_a_session_child_that_exits_by_itself_between_executions_is_logged(session, run, caplog):
    """Nothing asked it to end and no cell was running: the next execution finds the session gone, and the log
    says what status it ended with and what it printed."""
    with caplog.at_level("WARNING", logger="local_code_interpreter.sandbox.supervisor"):
        run(session.run("import os, sys, threading, time\n"
                        "def leave():\n    time.sleep(0.2)\n    print('leaving', file=sys.stderr, flush=True)\n"
                        "    os._exit(7)\nthreading.Thread(target=leave).start()"))
        deadline = time.monotonic() + 10
        while session.alive and time.monotonic() < deadline:
            run(asyncio.sleep(0.05))
    assert not session.alive
    assert "exited by itself between executions (status 7): leaving" in caplog.text, caplog.text


def test_descriptors_held_stay_within_what_the_connection_cap_leaves_room_for(run):
    """`descriptors(max_sessions, max_concurrency)` is what the server reserves below its file limit: with that many
    sessions open and that many one-shot runs in flight (and the spares refilled), this process holds no more."""
    from local_code_interpreter.sandbox.bounded import Bounded
    from local_code_interpreter.sandbox.process import descriptors

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    sessions, concurrency = 3, 8
    before = open_fds()
    sandbox = Bounded(Backend(LIMITS, grace_seconds=0.5), concurrency)
    run(sandbox.start())
    try:
        opened = [run(sandbox.open_session()) for _ in range(sessions)]
        peak = 0

        async def watch(stop: asyncio.Event) -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, open_fds() - before)
                await asyncio.sleep(0.005)

        async def burst() -> list:
            stop = asyncio.Event()
            watcher = asyncio.ensure_future(watch(stop))
            results = await asyncio.gather(*(sandbox.run("import time; time.sleep(0.3); print(1)")
                                             for _ in range(concurrency)))
            await asyncio.sleep(0.3)  # the spares refill
            stop.set()
            await watcher
            return results

        assert all(result.stdout == "1\n" for result in run(burst()))
        assert concurrency * 5 <= peak <= descriptors(sessions, concurrency), peak
        for session in opened:
            run(session.close())
    finally:
        run(sandbox.close())


def test_a_taken_session_spare_is_replaced_after_its_first_cell_not_during_it(backend, run):
    """The replacement spare is forked a moment after a new session took one (so the fork and its warm-up do not
    compete with that session's first cell on a small node), and it is forked: the spares are back in place."""
    from local_code_interpreter.sandbox.supervisor import SESSION_REFILL_DELAY_SECONDS

    supervisor = backend.supervisor
    run(asyncio.sleep(0.5))  # the spares forked at start (or after earlier tests) are in place

    def session_spares() -> int:  # of this back end's own limits (earlier tests left spares of other limits)
        return len(supervisor._spares.get((LIMITS, True), []))

    def refilling() -> bool:  # this kind's refill (a one-shot spare's periodic renewal may fork meanwhile)
        task = supervisor._refills.get((LIMITS, True))
        return task is not None and not task.done()

    before = session_spares()
    assert before == supervisor.spare_counts[True]

    async def open_and_run():
        session = await backend.open_session()
        refilling_at_once = refilling()  # right after it took a spare
        result = await session.run("print(6 * 7)")
        return session, refilling_at_once, result

    started = time.monotonic()
    session, refilling_at_once, result = run(open_and_run())
    try:
        assert result.stdout == "42\n"
        if time.monotonic() - started < SESSION_REFILL_DELAY_SECONDS:  # a slow machine may be past the moment
            assert not refilling() and session_spares() == before - 1
        assert not refilling_at_once
        deadline = time.monotonic() + 10
        while session_spares() < before and time.monotonic() < deadline:
            run(asyncio.sleep(0.02))
        assert session_spares() == before
    finally:
        run(session.close())


def test_a_burst_of_new_sessions_as_large_as_the_default_concurrency_finds_a_spare_each(backend, run):
    """As many sessions opened at once as may start at once by default (LCI_MAX_CONCURRENCY) each get a child forked
    and confined before they asked: none forks on its own path, although the spares they took are replaced only
    later (`SESSION_REFILL_DELAY_SECONDS`). With 2 spares, 2 of 4 here (and 9-14 % of new conversations back to
    back) forked their own."""
    from local_code_interpreter.settings import load

    supervisor = backend.supervisor  # a session opened without code starts warm
    burst = load({}, environ={}).max_concurrency
    deadline = time.monotonic() + 10
    while len(supervisor._spares.get((LIMITS, True), [])) < supervisor.spare_counts[True] \
            and time.monotonic() < deadline:  # the spares earlier tests took are replaced
        run(asyncio.sleep(0.02))

    async def each(call) -> list:
        return await asyncio.gather(*map(call, range(burst)))

    asked = time.monotonic()
    sessions = run(each(lambda _: backend.open_session()))
    try:
        assert [session.child.born < asked for session in sessions] == [True] * burst
        results = run(each(lambda k: sessions[k].run("print(6 * 7)")))
        assert [result.stdout for result in results] == ["42\n"] * burst
        assert len({session.child.pid for session in sessions}) == burst
    finally:
        run(each(lambda k: sessions[k].close()))


@pytest.fixture
def own_template(run):
    """A back end of its own (its template is about to be killed), with a session that has run a cell:
    (back end, session, template pid). The next execution starts a new template: checked after each test."""
    backend = Backend(LIMITS, spares=1, session_spares=1, grace_seconds=0.5)
    try:
        session = run(backend.open_session())
        run(session.run("x = 1"))
        template = backend.supervisor._process.pid
        yield backend, session, template
        assert run(backend.run("print(2)")).stdout == "2\n"
        assert backend.supervisor._process.pid != template
    finally:
        run(backend.close())


def _wait(run, condition) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        run(asyncio.sleep(0.05))


def test_children_ended_by_a_template_told_to_stop_are_not_logged_as_exiting_by_themselves(own_template, run,
                                                                                             caplog):
    """A SIGTERM that reaches the template (`pkill`, or a group-wide one) makes it end its children itself. While the
    server goes on, one warning says so; no child is reported as having exited (or died) by itself."""
    _, session, template = own_template
    with caplog.at_level("WARNING", logger="local_code_interpreter.sandbox.supervisor"):
        os.kill(template, signal.SIGTERM)
        _wait(run, lambda: "not at this server's request" in caplog.text)
    assert not session.alive
    assert "the sandbox template stopped, not at this server's request: it ended its children" in caplog.text, (
        caplog.text)
    assert "by itself" not in caplog.text and "died before its first cell" not in caplog.text, caplog.text


def test_a_template_killed_outright_is_logged_and_replaced(own_template, run, caplog):
    """SIGKILL (the OOM killer's) leaves the template no time to say anything: the server still says it ended,
    once."""
    _, session, template = own_template
    with caplog.at_level("WARNING", logger="local_code_interpreter.sandbox.supervisor"):
        os.kill(template, signal.SIGKILL)
        _wait(run, lambda: not session.alive)
    assert not session.alive
    assert caplog.text.count("the sandbox template ended without a word (killed?)") == 1, caplog.text
    assert "by itself" not in caplog.text, caplog.text


def test_the_templates_run_the_servers_own_copy_of_the_package_not_the_installed_one(tmp_path):
    """A server run from another copy of the package (a worktree, an unpacked release) forks its children from a
    template of that same copy: the supervisor and the template speak one protocol version, and a benchmark of an
    older commit measures that commit's sandbox."""
    import shutil
    import subprocess
    import sys

    import local_code_interpreter

    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(local_code_interpreter.__file__), copy / "local_code_interpreter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.chmod(tmp_path, 0o755)
    program = """
import asyncio, sys
import local_code_interpreter
from local_code_interpreter.sandbox import Limits
from local_code_interpreter.sandbox.process import Backend

async def main():
    backend = Backend(Limits(timeout_seconds=30))
    try:
        for code in ("import sys", "import numpy, sys"):  # the lean template, then the warm one
            name = "sys.modules['local_code_interpreter.sandbox.child'].__file__"
            result = await backend.run(f"{code}\\nprint({name})")
            print(result.stdout.strip() or result.stderr)
    finally:
        await backend.close()
print(local_code_interpreter.__file__)
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(copy)})
    assert done.returncode == 0, done.stderr[-2000:]
    server, lean, warm = done.stdout.split()
    assert server == str(copy / "local_code_interpreter" / "__init__.py")
    assert lean == warm == str(copy / "local_code_interpreter" / "sandbox" / "child.py"), done.stdout


def test_a_package_installed_in_a_site_directory_gets_no_pythonpath_in_front_of_the_standard_library(monkeypatch):
    import site

    from local_code_interpreter.sandbox import supervisor

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__))))
    monkeypatch.setattr(site, "getsitepackages", lambda: ["/elsewhere", root + "/"])
    assert supervisor.template_env() == supervisor.TEMPLATE_ENV
    monkeypatch.setattr(site, "getsitepackages", lambda: ["/elsewhere"])
    assert supervisor.template_env() == {**supervisor.TEMPLATE_ENV, "PYTHONPATH": root}
