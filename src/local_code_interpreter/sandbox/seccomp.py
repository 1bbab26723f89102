"""A seccomp filter with one job: the code may not create sockets (nor io_uring, which could create them).

Landlock's network rules cover TCP only; this closes UDP, raw, netlink and pathname Unix sockets too.
`socketpair()` stays allowed (it reaches nothing outside the process tree).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_X32_BIT = 0x40000000

# machine -> (audit arch, socket, io_uring_setup)
_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in _ARCHES


def _program() -> bytes:
    arch, socket_nr, io_uring_nr = _ARCHES[platform.machine()]

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    return b"".join([
        op(_LD_ABS_W, 4),                        # seccomp_data.arch
        op(_JEQ_K, arch, 1, 0),                  # a foreign ABI (e.g. 32-bit int 0x80) could reach socketcall:
        op(_RET_K, _RET_KILL_PROCESS),           # ...so it ends the process
        op(_LD_ABS_W, 0),                        # seccomp_data.nr
        op(_JGE_K, _X32_BIT, 0, 1),              # x32 system calls, likewise
        op(_RET_K, _RET_KILL_PROCESS),
        op(_JEQ_K, socket_nr, 0, 1),
        op(_RET_K, _RET_ERRNO | errno.EACCES),
        op(_JEQ_K, io_uring_nr, 0, 1),
        op(_RET_K, _RET_ERRNO | errno.ENOSYS),
        op(_RET_K, _RET_ALLOW),
    ])


_PROGRAM = _program() if supported() else b""


def forbid_sockets() -> None:
    """Install the filter on this thread's process for good; needs no_new_privs set first."""
    buffer = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
    program = _Filter(len(_PROGRAM) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
