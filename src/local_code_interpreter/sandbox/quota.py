"""What rlimits cannot bound per execution, measured from outside: its directory tree and its processes' memory.

Both walks run in a worker thread of the supervisor (they read /proc and the file system), never in the
server's event loop. When the server is not root the code runs as the server's own uid, so it can make a
directory unreadable to itself (`chmod 000`); the walks then restore the owner's rights on that directory
(the server owns it) rather than skip it, so nothing hides from the quota or survives the clean-up.
"""

from __future__ import annotations

import os
import shutil
import stat

SCRATCH_ENTRIES = 10000


def _scandir(path: str):
    """`os.scandir`, restoring the owner's rights on a directory the code made unreadable."""
    try:
        return os.scandir(path)
    except PermissionError:
        os.chmod(path, stat.S_IRWXU, follow_symlinks=False)
        return os.scandir(path)


def scratch_usage(path: str, limit_bytes: int | None = None, budget: int | None = None) -> tuple[int, int]:
    """Bytes on disk and entries below `path`; stops counting early past `limit_bytes` or `SCRATCH_ENTRIES`,
    or (returning what it has, with more entries than `budget`) after looking at `budget` entries."""
    used, entries, pending = 0, 0, [path]
    while pending:
        if budget is not None and entries > budget:
            return used, entries
        try:
            with _scandir(pending.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    used += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                    if limit_bytes is not None and (used > limit_bytes or entries > SCRATCH_ENTRIES):
                        return used, entries
        except OSError:
            continue  # removed while we walked
    return used, entries


def scratch_overflows(path: str, limit_bytes: int, budget: int | None = None) -> bool | None:
    """Whether the tree holds more than `limit_bytes` on disk or `SCRATCH_ENTRIES` entries; None when it has
    more than `budget` entries and still fits (the caller walks it all elsewhere, e.g. in a thread)."""
    used, entries = scratch_usage(path, limit_bytes, budget)
    if used > limit_bytes or entries > SCRATCH_ENTRIES:
        return True
    return None if budget is not None and entries > budget else False


def remove_tree(path: str) -> None:
    """Remove `path` and everything below it, directories the code made unreadable or unwritable included."""

    def fix(function, failed, error):
        error = error[1] if isinstance(error, tuple) else error
        if not isinstance(error, PermissionError):
            if isinstance(error, FileNotFoundError):
                return
            raise error
        parent = os.path.dirname(failed)
        for target in (parent, failed):
            try:
                if os.path.isdir(target) and not os.path.islink(target):
                    os.chmod(target, stat.S_IRWXU)
            except OSError:
                pass
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed, onerror=fix)
        else:
            os.unlink(failed)

    if os.path.lexists(path):
        os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(path, onerror=fix)


def children(pid: int) -> list[int]:
    """Direct children of a process (all its threads'), from /proc."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def tree(root: int) -> list[int]:
    """A process and its descendants."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children(pid)
    return found


def memory_of_tree(root: int) -> int:
    """Proportional resident memory (PSS, so pages shared after fork count once, and shared memory mappings
    count to whoever maps them) of a process and its descendants, in bytes."""
    return sum(pss(pid) for pid in tree(root))


def pss(pid: int) -> int:
    """Proportional resident memory of one process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_TICKS = os.sysconf("SC_CLK_TCK")


def _read_proc(path: str) -> bytes:
    """The first 4 KiB of a /proc file, raw: three system calls where `open()` makes six or more. These files are
    read at every session cell's start and end, and in every child (`isolation._host_parent`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (the first is the state), or None once it is gone."""
    try:
        return _read_proc(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu(fields: list[bytes]) -> int:
    return sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime: clock ticks


def session_of(pid: int) -> int | None:
    """The session id of a process, or None once it is gone."""
    fields = stat_fields(pid)
    return int(fields[3]) if fields else None


def cpu_of_tree(root: int, more: list[int] = ()) -> float:
    """CPU seconds a process and its descendants (and the processes `more`) used, with what each reaped of its
    own children (0 for one that is gone)."""
    return sum(_cpu(fields) for pid in [*tree(root), *more] if (fields := stat_fields(pid))) / _TICKS


def own_cpu(pid: int) -> tuple[float, int] | None:
    """(CPU seconds its threads and the children it reaped used; how many threads it has), or None once it is
    gone."""
    fields = stat_fields(pid)
    return (_cpu(fields) / _TICKS, int(fields[17])) if fields else None


def quiet(pid: int, threads: int) -> bool:
    """Whether a process with `threads` threads (`own_cpu`) has no other thread and no child (an idle session's
    REPL, when its own CPU does not move: see `Child.idle_cpu`)."""
    if threads != 1:
        return False
    try:
        return not _read_proc(f"/proc/{pid}/task/{pid}/children").strip()  # its only thread's: no listing needed
    except OSError:
        return True  # gone
