"""The `subprocess` back end's own guarantees, checked from outside the sandbox.

- The template that children are forked from never holds an execution's code, output or files (its memory,
  and a spare child's, are scanned for markers while executions and a session run).
- No process of an execution survives the server's SIGTERM or SIGKILL.
- As a non-root server (uid 65534, the container's case) the quota walk and the clean-up still see and remove
  directories the code made unreadable, and a fork-successor chain still dies (without PID namespaces).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import local_code_interpreter
from local_code_interpreter.sandbox import Limits
from local_code_interpreter.sandbox.process import Backend, report

from host_processes import CHAIN, alive, eventually, processes_in

pytestmark = pytest.mark.skipif(not report(Limits()).usable, reason="the subprocess back end needs Linux")

SRC = str(Path(local_code_interpreter.__file__).resolve().parents[1])
def memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which of `needles` occur in the writable memory of process `pid` (read through /proc as root)."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found.update(needle for needle in needles if needle in data)
    return sorted(found)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_template_and_spares_never_hold_execution_data():
    markers = [f"LCI-MARK-{secrets.token_hex(8)}" for _ in range(6)]
    code_marker, output_marker, session_marker, session_output, file_marker, running_marker = markers

    async def scenario():
        backend = Backend(Limits(timeout_seconds=20), spares=2, session_spares=1)
        try:
            earlier = await backend.run(f"secret = {code_marker!r}\nprint({output_marker!r})")
            assert earlier.stdout.strip() == output_marker
            session = await backend.open_session()
            await session.run(f"kept = {session_marker!r}\nprint({session_output!r})")
            await session.upload("data.txt", file_marker.encode())
            running = asyncio.create_task(backend.run(
                f"import time\nprint({running_marker!r}, flush=True)\nsecret = {running_marker!r}\ntime.sleep(3)"))
            await asyncio.sleep(1.5)
            templates = [supervisor._process.pid for supervisor in backend.supervisors]  # warm and lean
            spares = [child.pid for supervisor in backend.supervisors for spares in supervisor._spares.values()
                      for child in spares]
            needles = [m.encode() for m in markers]
            found = {pid: await asyncio.to_thread(memory_holds, pid, needles) for pid in [*templates, *spares]}
            session_child = session.child.pid
            in_session = await asyncio.to_thread(memory_holds, session_child, needles)
            await running
            await session.close()
            return found, spares, in_session
        finally:
            await backend.close()

    found, spares, in_session = asyncio.run(scenario())
    assert spares, "no spare child to scan"
    assert found == {pid: [] for pid in found}, found
    assert in_session, "the scan finds nothing even where the data is: it proves nothing"


SERVER = textwrap.dedent("""
    import asyncio, json, sys
    from local_code_interpreter.sandbox import Limits
    from local_code_interpreter.sandbox.process import Backend

    async def main():
        backend = Backend(Limits(timeout_seconds=60))
        session = await backend.open_session()
        started = await session.run(sys.argv[1])
        assert "chain started" in started.stdout, started
        in_flight = asyncio.create_task(backend.run("import time\\ntime.sleep(60)"))
        await asyncio.sleep(1)
        children = [child for supervisor in backend.supervisors for child in supervisor._children.values()]
        print(json.dumps({"templates": [supervisor._process.pid for supervisor in backend.supervisors],
                          "roots": [supervisor.root for supervisor in backend.supervisors],
                          "directories": [child.scratch for child in children]}), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_nothing_survives_the_server(sig):
    server = subprocess.Popen([sys.executable, "-c", SERVER, CHAIN], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line, "the server script did not start"
        state = json.loads(line)
        assert len(processes_in(state["directories"])) >= 4  # a session with its chain, one running, spares
        server.send_signal(sig)
        server.wait(timeout=30)
        assert eventually(lambda: not any(map(alive, state["templates"]))), "a template outlived the server"
        assert eventually(lambda: processes_in(state["directories"]) == []), processes_in(state["directories"])
        # what it left on disk (it could not clean up) is removed by the next server to start
        assert all(map(os.path.isdir, state["roots"])) and len(state["roots"]) == 2
        asyncio.run(start_and_close(Backend(Limits())))
        assert not any(map(os.path.exists, state["roots"]))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


async def start_and_close(backend: Backend) -> None:
    await backend.start()
    await backend.close()


NON_ROOT = textwrap.dedent("""
    import asyncio, json, os, sys
    from local_code_interpreter.sandbox import Limits
    from local_code_interpreter.sandbox.process import Backend

    HIDE = '''
    import os, time
    os.makedirs("hidden/deeper")
    for name in ("one", "two"):  # each under the file size limit, together past the quota
        with open(f"hidden/deeper/{name}", "wb") as f:
            f.write(b"x" * (3 * 2**19))
    os.chmod("hidden/deeper", 0)
    os.chmod("hidden", 0)
    time.sleep(5)
    print("not stopped")
    '''
    LOCKED = '''
    import os
    os.makedirs("a/b/c")
    open("a/b/c/f", "w").write("x")
    os.chmod("a/b/c", 0)
    os.chmod("a/b", 0)
    os.chmod("a", 0)
    print("locked")
    '''

    async def main():
        backend = Backend(Limits(timeout_seconds=10, scratch_mb=2))
        out = {"uid": os.geteuid()}
        hidden = await backend.run(HIDE)
        out["hidden"] = {"stdout": hidden.stdout, "stderr": hidden.stderr[-300:], "exit_code": hidden.exit_code}
        chain = await backend.run("import os\\nprint('directory', os.getcwd())\\n" + sys.argv[1])
        out["chain"] = chain.stdout
        session = await backend.open_session()
        out["session_directory"] = session.directory
        out["locked"] = (await session.run(LOCKED)).stdout
        await session.close()
        out["session_directory_left"] = os.path.exists(session.directory)
        out["roots"] = [supervisor.root for supervisor in backend.supervisors]
        out["namespaces"] = backend.supervisor.hello.get("pid_namespace")
        await backend.close()
        out["root_left"] = any(map(os.path.exists, out["roots"]))
        print(json.dumps(out), flush=True)

    asyncio.run(main())
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")
def test_non_root_server_sees_and_removes_everything():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": SRC}
    probe = subprocess.run([sys.executable, "-c", "import local_code_interpreter.sandbox.template, pandas"],
                           user=65534, group=65534, extra_groups=[], env=env, capture_output=True, text=True,
                           cwd="/tmp")
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot import the package from this checkout: {probe.stderr.strip()[-300:]}")
    done = subprocess.run([sys.executable, "-c", NON_ROOT, CHAIN], user=65534, group=65534, extra_groups=[],
                          env=env, capture_output=True, text=True, cwd="/tmp", timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534 and out["namespaces"] is False  # the fallback is what is tested here
    # the quota walk saw the 3 MiB hidden in a directory the code made unreadable (quota 2 MiB)
    assert "not stopped" not in out["hidden"]["stdout"] and "scratch directory grew" in out["hidden"]["stderr"], out
    assert out["hidden"]["exit_code"] == 1
    # the fork-successor chain died with its execution (freeze, then kill)
    directory = re.findall(r"directory (\S+)", out["chain"])
    assert "chain started" in out["chain"] and directory, out["chain"]
    assert eventually(lambda: processes_in(directory) == []), processes_in(directory)
    # the clean-up removed the locked tree and everything else
    assert out["locked"] == "locked\n"
    assert not out["session_directory_left"] and not out["root_left"], out
