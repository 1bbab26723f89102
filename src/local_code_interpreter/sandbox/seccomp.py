"""A small seccomp filter for the code: no sockets, no io_uring, no new namespaces.

Landlock's network rules cover TCP only; denying `socket()` closes UDP, raw, netlink and pathname Unix sockets
too (`socketpair()` stays allowed: it reaches nothing outside the process tree). io_uring could create sockets
behind the filter's back. New user namespaces are the usual door to the kernel's privilege-escalation surface:
`clone`/`unshare` with namespace flags are refused, and `clone3` (whose flags a filter cannot read) answers
ENOSYS, so the C library falls back to `clone`.
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

# machine -> audit arch and the system call numbers the filter names
_ARCHES = {
    "x86_64": (0xC000003E, {"socket": 41, "io_uring_setup": 425, "clone3": 435, "clone": 56, "unshare": 272}),
    "aarch64": (0xC00000B7, {"socket": 198, "io_uring_setup": 425, "clone3": 435, "clone": 220, "unshare": 97}),
}


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in _ARCHES


def _program() -> bytes:
    arch, nr = _ARCHES[platform.machine()]

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    return b"".join([
        op(_LD_ABS_W, 4),                          # seccomp_data.arch
        op(_JEQ_K, arch, 1, 0),                    # a foreign ABI (e.g. 32-bit int 0x80) could reach socketcall:
        op(_RET_K, _RET_KILL_PROCESS),             # ...so it ends the process
        op(_LD_ABS_W, 0),                          # seccomp_data.nr
        op(_JGE_K, _X32_BIT, 0, 1),                # x32 system calls, likewise
        op(_RET_K, _RET_KILL_PROCESS),
        op(_JEQ_K, nr["socket"], 0, 1),
        op(_RET_K, _RET_ERRNO | errno.EACCES),
        op(_JEQ_K, nr["io_uring_setup"], 0, 1),
        op(_RET_K, _RET_ERRNO | errno.ENOSYS),
        op(_JEQ_K, nr["clone3"], 0, 1),
        op(_RET_K, _RET_ERRNO | errno.ENOSYS),
        op(_JEQ_K, nr["clone"], 2, 0),             # clone and unshare: look at the flags
        op(_JEQ_K, nr["unshare"], 1, 0),
        op(_RET_K, _RET_ALLOW),
        op(_LD_ABS_W, 16),                         # seccomp_data.args[0], low 32 bits (little-endian)
        op(_JSET_K, _NAMESPACE_FLAGS, 0, 1),
        op(_RET_K, _RET_ERRNO | errno.EPERM),
        op(_RET_K, _RET_ALLOW),
    ])


_PROGRAM = _program() if supported() else b""
# Built once in the warm parent, so a forked child only makes the system call.
_BUFFER = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
_FPROG = _Filter(len(_PROGRAM) // 8, ctypes.cast(_BUFFER, ctypes.c_void_p))


def forbid_sockets() -> None:
    """Install the filter on this thread's process for good; needs no_new_privs set first."""
    if LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(_FPROG), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
