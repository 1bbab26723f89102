"""The seccomp filter every confined child runs under: no sockets, no new namespaces, none of the kernel's
privileged or cross-process interfaces. The template attaches it to itself and each child inherits it at the fork
(`template._filter_children`); where the template cannot, each child attaches it.

Compared with the default profiles of Docker (moby `profiles/seccomp/default.json`) and containerd
(`contrib/seccomp/seccomp_default.go`, the same list), which allow a list and deny the rest:

Denied here as there (they also need capabilities the child never has, but the filter does not rely on it):
  `keyctl`, `add_key`, `request_key` (keyrings: data left for the next execution), `bpf`, `perf_event_open`,
  `userfaultfd`, `ptrace`, `process_vm_readv`/`process_vm_writev`, `kcmp`, `pidfd_getfd`, the mount family (`mount`,
  `umount2`, `pivot_root`, `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr`),
  `setns`, `unshare`/`clone` with namespace flags (but `clone` with exactly the template's own, its fork: there the
  filter does rely on the kernel, which refuses them without CAP_SYS_ADMIN), `kexec_load`, `kexec_file_load`,
  `init_module`, `finit_module`, `delete_module`, `acct`, `swapon`, `swapoff`, `reboot`, `syslog`, `quotactl`,
  `quotactl_fd`, `lookup_dcookie`, `nfsservctl`, `vhangup`, `clock_settime`, `settimeofday`, `adjtimex`,
  `clock_adjtime`, `sethostname`, `setdomainname`, `name_to_handle_at`, `open_by_handle_at`, `fanotify_init`,
  `mbind`, `set_mempolicy`, `migrate_pages`, `move_pages`, and on x86_64 `iopl`, `ioperm`, `modify_ldt`, `uselib`,
  `create_module`, `_sysctl`.
  `personality` is allowed only with Docker's safe values (0, PER_LINUX32 8, UNAME26 0x20000, 0x20008 and the
  query 0xffffffff): no READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE.

Denied here, allowed by Docker:
  `socket` (Landlock's network rules cover TCP only; this closes UDP, raw, netlink and pathname Unix sockets;
  `socketpair` stays: it reaches nothing outside the process tree), `io_uring_*` (could issue the calls above
  behind the filter's back), `clone3` (its flags live in memory a filter cannot read: ENOSYS makes the C
  library fall back to `clone`), System V IPC (`shmget`/`shmat`/`shmctl`/`shmdt`, `msgget`/`msgsnd`/`msgrcv`/
  `msgctl`, `semget`/`semop`/`semtimedop`/`semctl`: objects outlive processes and shared memory stays resident
  after the execution; Python's `multiprocessing` uses POSIX semaphores in /dev/shm, which Landlock already
  keeps read-only), `memfd_create` and `memfd_secret` (memory-backed files outside the scratch quota).

Kept allowed on purpose:
  `socketpair`, `pipe`, `fork`/`clone` without namespace flags (subprocess, multiprocessing), `get_mempolicy`
  (NumPy/OpenBLAS query NUMA), `mmap` with MAP_SHARED|MAP_ANONYMOUS (counted in the processes' PSS, so the
  memory quota sees it), `prctl` (Python and glibc name threads; no_new_privs keeps it harmless), the
  `landlock_*` calls (they can only restrict further), `pidfd_open`/`pidfd_send_signal` (Landlock scopes
  signals to the child's own domain).

Errors: ENOSYS for what looks absent to well-behaved code (io_uring, clone3, memfd, userfaultfd), EACCES for
`socket`, EPERM for the rest. A foreign ABI (32-bit `int 0x80`, x32) ends the process: it could reach
`socketcall` and `ipc`, which this filter does not name.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from .libc import LIBC

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS_W, _JA, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x05, 0x15, 0x35, 0x45, 0x06
_ERRNO = {number: f"errno {number}" for number in (errno.EPERM, errno.EACCES, errno.ENOSYS)}  # return labels
_X32_BIT = 0x40000000
_SIGCHLD = 17  # clone's exit signal, in the low byte of its flags
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_COMMON = {  # numbered alike on x86_64 and aarch64 (the unified table from 425 on)
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442, "quotactl_fd": 443, "memfd_secret": 447,
}
# machine -> audit arch and the system call numbers the filter names
_ARCHES = {
    "x86_64": (0xC000003E, {**_COMMON,
        "socket": 41, "clone": 56, "unshare": 272, "personality": 135,
        "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66,
        "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
        "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "memfd_create": 319,
        "mount": 165, "umount2": 166, "pivot_root": 155, "setns": 308, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "acct": 163, "swapon": 167, "swapoff": 168,
        "reboot": 169, "syslog": 103, "quotactl": 179, "lookup_dcookie": 212, "nfsservctl": 180, "vhangup": 153,
        "clock_settime": 227, "settimeofday": 164, "adjtimex": 159, "clock_adjtime": 305, "sethostname": 170,
        "setdomainname": 171, "name_to_handle_at": 303, "open_by_handle_at": 304, "fanotify_init": 300,
        "mbind": 237, "set_mempolicy": 238, "migrate_pages": 256, "move_pages": 279, "iopl": 172, "ioperm": 173,
        "modify_ldt": 154, "uselib": 134, "create_module": 174, "_sysctl": 156}),
    "aarch64": (0xC00000B7, {**_COMMON,
        "socket": 198, "clone": 220, "unshare": 97, "personality": 92,
        "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197, "semget": 190, "semop": 193, "semctl": 191,
        "semtimedop": 192, "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187,
        "add_key": 217, "request_key": 218, "keyctl": 219, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "memfd_create": 279,
        "mount": 40, "umount2": 39, "pivot_root": 41, "setns": 268, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "acct": 89, "swapon": 224, "swapoff": 225,
        "reboot": 142, "syslog": 116, "quotactl": 60, "lookup_dcookie": 18, "nfsservctl": 42, "vhangup": 58,
        "clock_settime": 112, "settimeofday": 170, "adjtimex": 171, "clock_adjtime": 266, "sethostname": 161,
        "setdomainname": 162, "name_to_handle_at": 264, "open_by_handle_at": 265, "fanotify_init": 262,
        "mbind": 235, "set_mempolicy": 237, "migrate_pages": 238, "move_pages": 239}),
}
_LOOKS_ABSENT = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3", "memfd_create", "memfd_secret",
                 "userfaultfd")
_ARGUMENT_CHECKED = ("socket", "clone", "unshare", "personality")
DENIED = sorted(set(_ARCHES["x86_64"][1]) - set(_ARGUMENT_CHECKED) | {"socket"})


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in _ARCHES


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _program(machine: str, clone_flags: int = 0) -> bytes:
    """The filter: the ABI checks, then a binary search over the named system calls (a balanced tree of JGE,
    each leaf a JEQ or two), each answered by a shared return or by its argument check. With `clone_flags`, also
    `clone` with exactly those namespace flags and SIGCHLD: the template's own fork (`install`).

    A search, not a list: on attaching a filter the kernel runs it once for every system call number to find the
    ones it always allows (then those skip the filter), so its cost grows with the path an unnamed call takes.
    With a list of seventy comparisons the longest path was 85 instructions and attaching cost each child about
    0.16 ms; the search's longest is 14 and attaching costs about 0.125 ms, most of it the kernel's fixed cost of
    any filter (allocating and compiling it), which children avoid by inheriting the template's
    (`template._filter_children`): the template still pays it once, and a child that attaches its own, each time.
    """
    arch, nr = _ARCHES[machine]
    code: list = []  # instructions: (code, k, jt, jf), a jump's targets being labels until the end

    def leaf(target: str, entries: list[tuple[int, str]]) -> None:
        for number, answer in entries:
            code.append((_JEQ_K, number, answer, None))
        code.append((_JA, target, None, None))

    def search(entries: list[tuple[int, str]], otherwise: str) -> None:
        if len(entries) <= 2:
            leaf(otherwise, entries)
            return
        middle = len(entries) // 2
        right = f"search {entries[middle][0]}"
        code.append((_JGE_K, entries[middle][0], right, None))
        search(entries[:middle], otherwise)
        code.append(right)
        search(entries[middle:], otherwise)

    # A foreign ABI (32-bit `int 0x80`) could reach socketcall: it ends the process; x32 system calls likewise.
    code += [(_LD_ABS_W, 4, None, None), (_JEQ_K, arch, None, "kill"),    # seccomp_data.arch
             (_LD_ABS_W, 0, None, None), (_JGE_K, _X32_BIT, "kill", None)]  # seccomp_data.nr
    answers = {name: _ERRNO[errno.ENOSYS if name in _LOOKS_ABSENT else errno.EPERM] for name in nr}
    answers |= {"socket": _ERRNO[errno.EACCES], "personality": "personality", "clone": "clone",
                "unshare": "namespaces"}
    search(sorted((number, answers[name]) for name, number in nr.items()), "allow")
    # personality(): only the safe values.
    code += ["personality", (_LD_ABS_W, 16, None, None)]       # seccomp_data.args[0], low 32 bits (little-endian)
    code += [(_JEQ_K, value, "allow", None) for value in SAFE_PERSONALITIES]
    code += [(_JA, _ERRNO[errno.EPERM], None, None)]
    # clone() and unshare(): no namespace flags (clone: but for the template's own, when given).
    code += ["clone", (_LD_ABS_W, 16, None, None)]
    if clone_flags:
        code += [(_JEQ_K, clone_flags | _SIGCHLD, "allow", None)]
    code += [(_JSET_K, _NAMESPACE_FLAGS, _ERRNO[errno.EPERM], "allow")]
    code += ["namespaces", (_LD_ABS_W, 16, None, None), (_JSET_K, _NAMESPACE_FLAGS, _ERRNO[errno.EPERM], "allow")]
    code += ["kill", (_RET_K, _RET_KILL_PROCESS, None, None), "allow", (_RET_K, _RET_ALLOW, None, None)]
    for number in (errno.EPERM, errno.EACCES, errno.ENOSYS):
        code += [_ERRNO[number], (_RET_K, _RET_ERRNO | number, None, None)]
    return _assemble(code)


def _assemble(code: list) -> bytes:
    """Labels (strings) to offsets: a jump to a label lands on the instruction after it; None is the next one."""
    where, count = {}, 0
    for item in code:
        if isinstance(item, str):
            where[item] = count
        else:
            count += 1
    program, pc = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        op, k, jt, jf = item
        if op == _JA:
            program.append(_op(_JA, where[k] - pc - 1))
        else:
            offsets = [0 if target is None else where[target] - pc - 1 for target in (jt, jf)]
            if not all(0 <= offset <= 255 for offset in offsets):
                raise ValueError(f"a jump out of reach at instruction {pc}")
            program.append(_op(op, k, *offsets))
        pc += 1
    return b"".join(program)


def _compiled(program: bytes) -> tuple[_Filter, ctypes.Array]:
    """The `sock_fprog` for `program`, and the buffer it points to (which must outlive its use)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    return _Filter(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p)), buffer


_PROGRAM = _program(platform.machine()) if supported() else b""
# Built once in the template, so a forked child that attaches the filter itself only makes the system call.
_FPROG, _BUFFER = _compiled(_PROGRAM)


def install(clone_flags: int = 0) -> None:
    """Install the filter on this process (and its future children) for good; needs no_new_privs set first.

    `clone_flags`: the namespace flags this process itself forks with, allowed to it (and, with exactly those
    flags, to its children: a template's children cannot use them, having no CAP_SYS_ADMIN; `template.py`)."""
    fprog, _buffer = (_FPROG, _BUFFER) if not clone_flags else _compiled(_program(platform.machine(), clone_flags))
    if LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

