"""The seccomp filter every confined child installs: no sockets, no new namespaces, none of the kernel's
privileged or cross-process interfaces.

Compared with the default profiles of Docker (moby `profiles/seccomp/default.json`) and containerd
(`contrib/seccomp/seccomp_default.go`, the same list), which allow a list and deny the rest:

Denied here as there (they also need capabilities the child never has, but the filter does not rely on it):
  `keyctl`, `add_key`, `request_key` (keyrings: data left for the next execution), `bpf`, `perf_event_open`,
  `userfaultfd`, `ptrace`, `process_vm_readv`/`process_vm_writev`, `kcmp`, `pidfd_getfd`, the mount family
  (`mount`, `umount2`, `pivot_root`, `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`,
  `mount_setattr`), `setns`, `unshare`/`clone` with namespace flags, `kexec_load`, `kexec_file_load`,
  `init_module`, `finit_module`, `delete_module`, `acct`, `swapon`, `swapoff`, `reboot`, `syslog`, `quotactl`,
  `quotactl_fd`, `lookup_dcookie`, `nfsservctl`, `vhangup`, `clock_settime`, `settimeofday`, `adjtimex`,
  `clock_adjtime`, `sethostname`, `setdomainname`, `name_to_handle_at`, `open_by_handle_at`, `fanotify_init`,
  `mbind`, `set_mempolicy`, `migrate_pages`, `move_pages`, and on x86_64 `iopl`, `ioperm`, `modify_ldt`,
  `uselib`, `create_module`, `_sysctl`.
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
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_X32_BIT = 0x40000000
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


def _program() -> bytes:
    arch, nr = _ARCHES[platform.machine()]
    program = [
        _op(_LD_ABS_W, 4),                          # seccomp_data.arch
        _op(_JEQ_K, arch, 1, 0),                    # a foreign ABI (e.g. 32-bit int 0x80) could reach socketcall:
        _op(_RET_K, _RET_KILL_PROCESS),             # ...so it ends the process
        _op(_LD_ABS_W, 0),                          # seccomp_data.nr
        _op(_JGE_K, _X32_BIT, 0, 1),                # x32 system calls, likewise
        _op(_RET_K, _RET_KILL_PROCESS),
        _op(_JEQ_K, nr["socket"], 0, 1),
        _op(_RET_K, _RET_ERRNO | errno.EACCES),
    ]
    for name, number in sorted(nr.items()):
        if name in _ARGUMENT_CHECKED:
            continue
        error = errno.ENOSYS if name in _LOOKS_ABSENT else errno.EPERM
        program += [_op(_JEQ_K, number, 0, 1), _op(_RET_K, _RET_ERRNO | error)]
    # personality(): only the safe values; the accumulator is reloaded, so this block comes after the list.
    safe = len(SAFE_PERSONALITIES)
    program += [_op(_JEQ_K, nr["personality"], 0, safe + 3), _op(_LD_ABS_W, 16)]
    program += [_op(_JEQ_K, value, safe - i, 0) for i, value in enumerate(SAFE_PERSONALITIES)]
    program += [_op(_RET_K, _RET_ERRNO | errno.EPERM), _op(_RET_K, _RET_ALLOW)]
    # clone() and unshare(): no namespace flags.
    program += [
        _op(_JEQ_K, nr["clone"], 2, 0),
        _op(_JEQ_K, nr["unshare"], 1, 0),
        _op(_RET_K, _RET_ALLOW),
        _op(_LD_ABS_W, 16),                         # seccomp_data.args[0], low 32 bits (little-endian)
        _op(_JSET_K, _NAMESPACE_FLAGS, 0, 1),
        _op(_RET_K, _RET_ERRNO | errno.EPERM),
        _op(_RET_K, _RET_ALLOW),
    ]
    return b"".join(program)


_PROGRAM = _program() if supported() else b""
# Built once in the template, so a forked child only makes the system call.
_BUFFER = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
_FPROG = _Filter(len(_PROGRAM) // 8, ctypes.cast(_BUFFER, ctypes.c_void_p))


def install() -> None:
    """Install the filter on this process for good; needs no_new_privs set first."""
    if LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(_FPROG), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

