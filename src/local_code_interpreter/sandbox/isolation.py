"""The isolation layers applied to every forked execution, each able to say whether it is active here."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import sysconfig
import tempfile

from . import landlock, quota, seccomp
from .quota import SCRATCH_ENTRIES
from .libc import LIBC
from .types import Layer, Limits

NOBODY = 65534
QUOTA_CHECK_SECONDS = 0.1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1

# The only environment the code ever sees: fixed, with nothing from the server.
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}

_SYSTEM_READ_ONLY = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc/ld.so.cache", "/etc/localtime",
                     "/etc/ssl", "/etc/alternatives", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
                     "/dev/urandom", "/dev/random", "/dev/zero"]


def read_only_paths() -> list[str]:
    """What the interpreter reads: system libraries, its prefixes' library folders and the executable."""
    paths = {os.path.realpath(sys.executable)}
    for scheme_path in ("stdlib", "platstdlib", "purelib", "platlib"):
        for prefix in {sys.prefix, sys.base_prefix}:
            paths.add(os.path.realpath(sysconfig.get_path(scheme_path, vars={"base": prefix, "platbase": prefix})))
    paths.add(os.path.join(os.path.realpath(sys.base_prefix), "lib"))  # libpython for shared builds
    paths.add(os.path.join(sys.prefix, "pyvenv.cfg"))  # a virtual environment's interpreter reads it at start
    # This package's sandbox modules, wherever it is installed (a checkout too): a child that imports matplotlib
    # itself loads our figures back end from here (`child._LibraryImports`).
    paths.add(os.path.dirname(os.path.realpath(__file__)))
    return _SYSTEM_READ_ONLY + sorted(p for p in paths if os.path.exists(p))


def drops_root() -> bool:
    """Running as root, the code runs as `nobody` instead (so the process limit applies: root ignores it)."""
    return os.geteuid() == 0


def landlock_rules(abi: int) -> list[tuple[int, int]]:
    """The fixed part of every execution's Landlock ruleset, opened once in the warm parent."""
    return landlock.open_rules(abi, read_only_paths(), ["/dev/null"]) if abi > 0 else []


def apply(scratch_fd: int, limits: Limits, ruleset: int, process_budget: int, address_space: tuple[int, int],
          session: bool, parent: int, filter_inherited: bool = False) -> None:
    """Confine the current (freshly forked) process; order matters: uid, rlimits, no_new_privs, seccomp, Landlock.

    It dies with `parent` (the template): the parent-death signal is set after the uid change, which would clear
    it, and the parent is checked once it is set, in case it died before.

    `scratch_fd` is the execution's directory (its only writable place), and `ruleset` the Landlock ruleset the
    template built for this child (`landlock.ruleset`: the read-only paths and that directory), -1 without
    Landlock; `address_space` the RLIMIT_AS (soft, hard) in bytes (the template's own size plus the memory limit:
    the warm modules are mapped already; hard, for a lean template's child, what a warm one's has: see
    `child._LibraryImports`). A session gets no CPU-time limit: its executions add up; the wall-clock deadline
    bounds each one instead. `filter_inherited`: the template attached the seccomp filter before the fork
    (`template._filter_children`), so it is not attached again.
    """
    os.fchdir(scratch_fd)
    if drops_root():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _host_parent() != parent:
        os._exit(1)  # the parent died before the line above: no signal will come
    limits_to_set = [(resource.RLIMIT_AS, address_space), (resource.RLIMIT_NPROC, process_budget),
                     (resource.RLIMIT_FSIZE, limits.scratch_mb * 1024 * 1024), (resource.RLIMIT_CORE, 0)]
    if not session:
        limits_to_set.append((resource.RLIMIT_CPU, int(limits.timeout_seconds) + 1))
    _set_limits(*limits_to_set)
    no_new_privs()
    if seccomp.supported() and not filter_inherited:  # the template's, attached before the fork: `template.py`
        seccomp.install()
    if ruleset >= 0:
        landlock.enforce(ruleset)
    os.closerange(5, 1 << 16)  # nothing of the template's stays open: its socket, the rules' paths
    _set_limits((resource.RLIMIT_NOFILE, limits.max_open_files))  # only now: the descriptors above were high
    if not _environment_fixed:
        fix_environment()
    home = os.getcwd()
    os.environ["HOME"] = os.environ["TMPDIR"] = home
    # The template has looked the temporary directory up already (its own /tmp, which Landlock closes to the code):
    # `tempfile` would keep using that instead of TMPDIR, and every temporary file the code made would fail.
    tempfile.tempdir = home


_environment_fixed = False


def fix_environment(extra: dict[str, str] | None = None) -> None:
    """The environment becomes `SANDBOX_ENV` (plus `extra`), nothing else. A template does this once, after its
    warm imports, so that `apply` in each child only sets HOME and TMPDIR: clearing and rebuilding `os.environ`
    in every child cost about 0.1 ms of copy-on-write faults (Python touching the mapping's objects)."""
    global _environment_fixed
    os.environ.clear()
    os.environ.update(SANDBOX_ENV, **(extra or {}))
    _environment_fixed = True


def _host_parent() -> int:
    """The parent's pid as the host sees it: `os.getppid()` is 0 in a new PID namespace (the parent is outside it),
    while /proc, still the host's mount here, names it in the host's numbering. (Raw bytes: this runs in every
    child, where each object Python touches first costs a copy-on-write fault.)"""
    fields = quota.stat_fields("self")
    if fields is None:
        raise OSError("cannot read /proc/self/stat")
    return int(fields[1])


def _set_limits(*pairs: tuple[int, int | tuple[int, int]]) -> None:
    """Each limit to `value`, soft and hard, or to (soft, hard); never above what we were given."""
    for limit, value in pairs:
        soft, hard = value if isinstance(value, tuple) else (value, value)
        given = resource.getrlimit(limit)[1]
        if given != resource.RLIM_INFINITY:
            soft, hard = min(soft, given), min(hard, given)
        resource.setrlimit(limit, (soft, hard))


def no_new_privs() -> None:
    """Set no_new_privs on this process for good (what attaching a seccomp filter or a Landlock ruleset needs)."""
    if LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def seccomp_works() -> bool:
    """Whether this host lets a process install the socket filter, tried in a short-lived child."""
    if not seccomp.supported():
        return False
    pid = os.fork()
    if pid == 0:
        try:
            no_new_privs()
            seccomp.install()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _user_detail(root: bool) -> str:
    if not root:
        return f"runs as the server's uid {os.geteuid()} (not root)"
    unreadable = [p for p in read_only_paths() if os.path.exists(p) and not _world_readable(p)]
    if unreadable:
        return (f"runs as uid {NOBODY} (server is root), which cannot read {unreadable[0]}: modules not preloaded "
                "will fail to import; use a Python installed outside /root")
    return f"runs as uid {NOBODY} (server is root)"


def _world_readable(path: str) -> bool:
    """Whether `nobody` can reach and read `path` (every parent searchable, the path itself readable)."""
    parts = os.path.realpath(path).split(os.sep)
    for depth in range(1, len(parts)):
        parent = os.sep.join(parts[:depth]) or os.sep
        if not os.stat(parent).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


def detect(limits: Limits, landlock_abi: int) -> list[Layer]:
    """Each layer and whether it is active on this host, for `doctor` and the start-up log."""
    from .template import namespace_flags

    linux = sys.platform.startswith("linux")
    root = drops_root()
    filtered = seccomp_works()
    namespaces, namespace_detail = namespace_flags() if linux else (0, "not Linux")
    fallback = ("; instead: own session and process group, and the template (a child subreaper) freezes with "
                "SIGSTOP, then kills, whatever leaves them; on the server's SIGTERM it kills its whole tree, but a "
                "process that left its session survives a SIGKILL of the template" if not namespaces else "")
    return [
        Layer("environment", True, f"fixed minimal environment ({', '.join(SANDBOX_ENV)}, HOME, TMPDIR); no server variable"),
        Layer("pristine template", linux, "children are forked from a template that only forks and reaps: it never "
              "receives code, input, output or files, so no child inherits another execution's data"),
        Layer("spare children", linux, "forked and confined before any request, waiting on their cell pipe; one-shot "
              "runs end their child, sessions keep it"),
        Layer("scratch directory", True, "fresh per execution or session, removed afterwards (directories the code "
              "made unreadable included)"),
        Layer("pid namespace", bool(namespaces), namespace_detail + (
            ": killing its init ends every process of the execution at once, fork-successor chains included"
            if namespaces else fallback)),
        Layer("ipc namespace", bool(namespaces), (
            "own System V IPC namespace (and keyrings, shm, msg, sem denied by seccomp)" if namespaces else
            "not available (" + namespace_detail + "); System V IPC and keyrings are denied by seccomp instead")),
        Layer("lifetime", linux, "the template dies with the server (PDEATHSIG) and every child with the template "
              "(PDEATHSIG SIGKILL); the template kills its tree on SIGTERM or when its control socket closes"),
        Layer("unprivileged user", True, _user_detail(root)),
        Layer("rlimits", linux, f"address space the template's size plus {limits.memory_mb} MiB (the warm modules "
              f"are mapped already; the PSS quota is the real bound), CPU {int(limits.timeout_seconds) + 1} s for "
              f"one-shot runs, {limits.max_processes} more processes (a session's own processes are counted by the "
              f"supervisor instead: the uid-wide limit gets headroom as other sessions start; in a container, "
              f"the uid's tasks in other containers too, asked from the kernel: tasks.py), file size "
              f"{limits.scratch_mb} MiB, "
              f"{limits.max_open_files} open files"),
        Layer("quotas", True, f"scratch {limits.scratch_mb} MiB and {SCRATCH_ENTRIES} entries, memory {limits.memory_mb} "
              f"MiB PSS over all its processes (shared-memory mappings included; memfd and System V shared memory "
              f"denied); checked every {QUOTA_CHECK_SECONDS:g} s while code runs and every second for an idle "
              "session that still runs threads or processes; the execution is killed past them"),
        Layer("no_new_privs", linux, "set before running code" if linux else "not Linux"),
        Layer("seccomp", filtered, "socket() denied (no UDP, raw, netlink or Unix-path sockets; socketpair "
              "allowed), new namespaces, io_uring, keyrings, System V IPC, memfd, bpf, perf, userfaultfd, ptrace, "
              "the mount family, modules and kexec denied; personality() only with safe values (seccomp.py lists "
              "what stays allowed and why); attached once by the template and inherited by each child (by each child "
              "itself where the template cannot)" if filtered
              else "cannot install a filter on this platform"),
        Layer("landlock", landlock_abi > 0, landlock.describe(landlock_abi) + (
            "; read-only interpreter and system libraries, read-write scratch only" if landlock_abi > 0 else "")),
        Layer("file metadata", False, "not hidden: Landlock governs opening, not stat(), so the code can still "
              "learn whether a path exists and its size, owner and times anywhere it can name (no mount "
              "namespace is used); file contents outside the allowed paths stay unreadable"),
        Layer("output cap", True, f"{limits.max_output_bytes} bytes per stream, invalid UTF-8 replaced"),
    ]
