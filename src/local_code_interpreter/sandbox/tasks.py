"""How many tasks of the children's uid count against their process limit, as the template finds them.

RLIMIT_NPROC is checked against every task of the uid on the host (in the initial user namespace), but /proc in a
container shows only its own PID namespace. Where other containers on the host run as the same user (another replica
of this image on the node, any image that runs as `nobody`), the kernel counts tasks the template cannot see, and a
child whose limit is what the template sees plus its allowance finds its allowance taken by them: it cannot start a
single process or thread. `hidden` asks the kernel instead, in a throwaway child of the template: it forks under
rising limits (a fork fits under a limit above the count and fails with EAGAIN at or below it), one fork where
nothing is hidden, about twice the count's bit length where something is. The template adds the figure to each
child's limit, and asks again every `PROBE_SECONDS` without waiting for the answer (`Probe`); the supervisor logs it
when it appears. In the host's own PID namespace /proc shows every task, and nothing is asked (`can_hide`).
"""

from __future__ import annotations

import _signal as _handlers  # as template.py: plain ints, no enum machinery in a fresh child
import os
import resource

# A probe costs 8-23 ms of CPU here for the warm template (two forks of its address space and a walk of /proc):
# under 0.25 % of a CPU per template, and only in a container (`can_hide`).
PROBE_SECONDS = 10.0
MAX_TASKS = 1 << 22  # the kernel's highest pid_max
INITIAL_PID_NAMESPACE = 0xEFFFFFFC  # the host's own (the kernel's PROC_PID_INIT_INO)


def can_hide() -> bool:
    """Whether tasks can be out of this process's sight: it is not in the host's own PID namespace."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino != INITIAL_PID_NAMESPACE
    except OSError:
        return True


def visible(uid: int) -> int:
    """The tasks (threads included, as RLIMIT_NPROC counts them) of `uid` that /proc here shows."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def hidden(uid: int, drop: bool) -> int:
    """Run in a throwaway process (it changes its uid, with `drop`, and its limits): the tasks of `uid` the kernel
    counts that `visible` does not show; -1 when unknown (a fork failed under every limit: another limit binds, such
    as the pod's pids cgroup, or the hard RLIMIT_NPROC)."""
    if drop:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    seen = visible(uid)  # this process included, as the kernel's count is
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    top = MAX_TASKS if hard == resource.RLIM_INFINITY else min(hard, MAX_TASKS)

    def fits(limit: int) -> bool:
        """Whether one more task fits under `limit`, i.e. the kernel counts fewer than `limit` now."""
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, hard))
        try:
            pid = os.fork()
        except BlockingIOError:
            return False
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return True

    if seen + 1 <= top and fits(seen + 1):
        return 0  # the usual case: one fork
    low, high = seen + 1, seen + 2  # fits(low) is false
    while high > top or not fits(high):
        if high >= top:
            return -1
        low, high = high, min(top, seen + 2 * (high - seen))
    while high - low > 1:  # fits(high), not fits(low)
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high - 1 - seen  # the kernel counts high - 1


class Probe:
    """`hidden` in a child of the template; `fd` is readable when it is done, `result()` reads it."""

    def __init__(self, uid: int, drop: bool):
        read, write = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _handlers.set_wakeup_fd(-1)  # its children's exits are not the template's business
                _handlers.signal(_handlers.SIGCHLD, _handlers.SIG_DFL)
                os.close(read)
                os.write(write, str(hidden(uid, drop)).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        self.pid, self.fd = pid, read

    def result(self) -> int | None:
        """The figure (-1: unknown), or None if the probe ended without one. Blocks until it is done; closes `fd`."""
        try:
            data = os.read(self.fd, 64)
        finally:
            os.close(self.fd)
        try:
            return int(data)
        except ValueError:
            return None
