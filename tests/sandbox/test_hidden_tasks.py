"""Neighbours the sandbox cannot see: other containers on the host that run as the same user.

RLIMIT_NPROC counts every task of the uid on the host, but /proc in a container shows only its PID namespace. Here
the sandbox runs in a PID namespace of its own (`unshare --pid --mount-proc`, as in a container) while tasks of
`nobody` run outside it, as another replica's sessions would: a child whose limit counted only what the template
sees could not start one process (one-shot runs past `max_processes` such tasks, sessions past their headroom as
well). The template asks the kernel instead (`sandbox/tasks.py`), at its start and again every few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import local_code_interpreter
from local_code_interpreter.sandbox import Limits
from local_code_interpreter.sandbox.isolation import NOBODY
from local_code_interpreter.sandbox.process import report
from local_code_interpreter.sandbox.tasks import visible
from local_code_interpreter.sandbox.template import SESSION_NPROC_HEADROOM

SRC = str(Path(local_code_interpreter.__file__).resolve().parents[1])
STARTS = "import subprocess\nprint(sum(subprocess.run(['true']).returncode == 0 for _ in range(5)))"

# In the PID namespace (under a shell, so that the server is not its init: a template whose parent is pid 1 takes
# it for dead): a one-shot run and a session that start processes, each template's count of the hidden tasks, and
# what the log said. With `--late`, the tasks start after the sandbox (the test says when: a line on stdin), and
# one-shot runs are tried until the background probe and the renewed spares take them in.
SCRIPT = textwrap.dedent("""
    import asyncio, json, logging, sys, time
    sys.path.insert(0, SRC)
    from local_code_interpreter.sandbox import Limits
    from local_code_interpreter.sandbox.process import Backend

    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("local_code_interpreter").addHandler(handler)
    logging.getLogger("local_code_interpreter").setLevel(logging.INFO)

    async def main():
        backend = Backend(Limits(), spares=1, session_spares=1)
        await backend.start()
        try:
            if "--late" in sys.argv:
                print("started", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                deadline = time.monotonic() + 40
                while True:
                    one_shot = await backend.run(CODE)
                    if one_shot.stdout.strip() == "5" or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
            else:
                one_shot = await backend.run(CODE)
            session = await backend.open_session()
            in_session = await session.run(CODE)
            await session.close()
            print(json.dumps({"one_shot": [one_shot.stdout, one_shot.stderr[-300:]],
                              "session": [in_session.stdout, in_session.stderr[-300:]],
                              "hidden": [supervisor.hidden for supervisor in backend.supervisors], "said": said}))
        finally:
            await backend.close()

    asyncio.run(main())
""").replace("SRC", repr(SRC)).replace("CODE", repr(STARTS))


def _can_hide() -> str | None:
    """Why this host cannot run the test (None: it can)."""
    if not report(Limits()).usable:
        return "the subprocess back end needs Linux"
    if os.geteuid() != 0:
        return "a PID namespace of its own (unshare --pid) and tasks of nobody need root"
    if not shutil.which("unshare") or not shutil.which("setpriv"):
        return "unshare and setpriv (util-linux) are not installed"
    tried = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if tried.returncode:
        return f"unshare --pid --mount-proc failed here: {tried.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(_can_hide() is not None, reason=str(_can_hide()))


def _nobody_tasks(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sleep", "300"])
            for _ in range(count)]


def _hidden_sandbox(*args: str) -> subprocess.Popen:
    """The script in a PID namespace of its own, under a shell (`sh -c 'python "$@"; true'`: not its init)."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", 'python "$@"; true', "sh",
                             "-c", SCRIPT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PATH=path))


def _finish(sandbox: subprocess.Popen, tasks: list[subprocess.Popen], stdin: str = "") -> dict:
    try:
        out, err = sandbox.communicate(stdin, timeout=120)
    finally:
        for task in tasks:
            task.kill()
            task.wait()
    assert sandbox.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("count", [100, SESSION_NPROC_HEADROOM + 100], ids=["past-one-shot", "past-sessions"])
def test_tasks_of_the_uid_in_other_containers_do_not_take_an_executions_allowance(count):
    before = visible(NOBODY)  # tasks of nobody on the host already: seen from here, the host's PID namespace
    tasks = _nobody_tasks(count)
    result = _finish(_hidden_sandbox(), tasks)
    assert result["one_shot"][0] == "5\n", result["one_shot"]
    assert result["session"][0] == "5\n", result["session"]
    for hidden in result["hidden"]:  # every task of nobody outside, these and any the host ran already
        assert count <= hidden <= count + before + 8, (hidden, count, before)
    warnings = [line for line in result["said"] if "cannot see count against" in line]
    assert len(warnings) == 1, result["said"]  # both templates found them; the log says it once


def test_tasks_that_appear_after_the_start_are_counted_too():
    """The other replica's sessions start later: the template asks again in the background, and spares forked
    from then on count them."""
    sandbox = _hidden_sandbox("--late")
    assert sandbox.stdout.readline().strip() == "started"
    tasks = _nobody_tasks(100)
    started = time.monotonic()
    result = _finish(sandbox, tasks, stdin="go\n")
    assert result["one_shot"][0] == "5\n", (result, time.monotonic() - started)
    assert all(hidden >= 100 for hidden in result["hidden"]), result["hidden"]
    assert any("cannot see count against" in line for line in result["said"]), result["said"]
