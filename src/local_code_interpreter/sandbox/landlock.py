"""Linux Landlock through raw system calls: file-system, TCP and scoping rules for the current process."""

from __future__ import annotations

import ctypes
import os
import platform

from .libc import LIBC

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and aarch64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

# File-system rights, by the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: 1 << 13, 3: 1 << 14, 5: 1 << 15}  # v1 all 13 rights, REFER, TRUNCATE, IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

READ_ONLY = EXECUTE | READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | _FS_BY_ABI[3] | _FS_BY_ABI[5]  # what a rule on a file may grant


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]




def abi_version() -> int:
    """The kernel's Landlock ABI, or 0 where Landlock is absent or disabled."""
    if platform.system() != "Linux":
        return 0
    version = LIBC.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def fs_rights(abi: int) -> int:
    """Every file-system right the given ABI can handle (so all of them are denied unless granted)."""
    return sum(bits for level, bits in _FS_BY_ABI.items() if abi >= level)


def describe(abi: int) -> str:
    """What a ruleset at this ABI enforces, in words."""
    if abi <= 0:
        return "not available in this kernel"
    parts = [f"ABI {abi}: file system"]
    parts.append("TCP bind/connect denied" if abi >= 4 else "no network rules (needs ABI 4)")
    parts.append("signals and abstract sockets scoped" if abi >= 6 else "no signal scoping (needs ABI 6)")
    return ", ".join(parts)


def open_rules(abi: int, read_only: list[str], read_write: list[str]) -> list[tuple[int, int]]:
    """Open each existing path once (O_PATH) and pair it with its rights; done in the warm parent."""
    handled = fs_rights(abi)
    rules = []
    for paths, access in ((read_only, READ_ONLY), (read_write, handled)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this host lacks needs no rule
            rules.append((fd, access if os.path.isdir(path) else access & _FILE_RIGHTS))
    return rules


def ruleset(abi: int, rules: list[tuple[int, int]], read_write_fd: int) -> int:
    """A ruleset of `rules` (from `open_rules`) plus the directory `read_write_fd`, as a descriptor (close-on-exec)
    for `enforce`. Built by the template for each child before it forks it, so that the child makes one system
    call instead of two dozen (in a fresh child every Python object those calls touch costs a copy-on-write
    fault: 0.2 ms a child here). A ruleset is used by one child only: a rule added to it later would reach
    every process that enforces it afterwards."""
    handled_fs = fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    fd = LIBC.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rule = _PathBeneathAttr()
        for parent, access in [*rules, (read_write_fd, handled_fs)]:
            rule.parent_fd, rule.allowed_access = parent, access
            if LIBC.syscall(_SYS_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                raise OSError(ctypes.get_errno(), "landlock_add_rule failed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def enforce(ruleset_fd: int) -> None:
    """Confine this process (and its future children) for good to the ruleset `ruleset_fd`, and close it.

    Needs no_new_privs set first.
    """
    try:
        if LIBC.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset_fd)
