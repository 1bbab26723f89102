"""The C library, loaded once for the isolation layers' system calls (prctl, syscall), errno kept."""

from __future__ import annotations

import ctypes

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
