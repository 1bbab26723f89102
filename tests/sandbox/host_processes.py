"""What the host's /proc says about processes, for the sandbox tests (imported as `host_processes`; the non-root
mode of test_session_attacks.py puts this folder on PYTHONPATH).

`CHAIN` is model code whose processes try to outlive their execution: a chain where each link forks a successor
that takes its place when it is killed. It prints "chain started" once the chain runs.
"""

from __future__ import annotations

import os
import time

CHAIN = """
import os, time
if os.fork() == 0:
    os.setsid()
    while True:  # a chain: each link forks a successor that takes its place when it is killed
        me = os.getpid()
        if os.fork() != 0:
            while True:
                time.sleep(1)
        os.setsid()
        while True:
            try:
                os.kill(me, 0)
                time.sleep(0.01)
            except ProcessLookupError:
                break
time.sleep(0.5)
print("chain started", flush=True)
"""


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent pid)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """True while `pid` exists and is neither a zombie nor dead."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def descendants(root: int) -> set[int]:
    """Live processes below `root`."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            fields = _stat(entry)
            if fields[0] not in ("Z", "X"):
                parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def processes_in(directories: list[str]) -> list[int]:
    """Live processes whose working directory is (or was, before its removal) one of `directories`."""
    wanted = set(directories)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                if os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)") in wanted:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def eventually(condition, seconds: float = 15.0) -> bool:
    """Poll `condition` until true or `seconds` pass (a bound on hanging, not a timing claim)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
