"""The seccomp program itself, run by a classic-BPF interpreter: its answer for every system call number and
argument that matters, on each architecture it is built for, and the length of the path the kernel emulates for
each number when the filter is attached (what attaching costs every child). The real kernel's answers are
asserted by `test_attacks.py`, on this machine's architecture."""

from __future__ import annotations

import errno
import struct

import pytest

from local_code_interpreter.sandbox import seccomp

_KILL, _ALLOW, _ERRNO = seccomp._RET_KILL_PROCESS, seccomp._RET_ALLOW, seccomp._RET_ERRNO


def run(program: bytes, arch: int, nr: int, arg0: int = 0) -> tuple[int, int]:
    """(the filter's return value, the instructions it executed) for one call."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    instructions = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    pc = accumulator = steps = 0
    while True:
        code, jt, jf, k = instructions[pc]
        steps += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            accumulator = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += 1 + k
        elif code in (0x15, 0x35, 0x45):  # JEQ, JGE, JSET with a constant
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k, steps
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")


def expected(name: str | None, arg0: int = 0) -> int:
    if name is None:
        return _ALLOW
    if name == "socket":
        return _ERRNO | errno.EACCES
    if name == "personality":
        return _ALLOW if arg0 in seccomp.SAFE_PERSONALITIES else _ERRNO | errno.EPERM
    if name in ("clone", "unshare"):
        return _ERRNO | errno.EPERM if arg0 & seccomp._NAMESPACE_FLAGS else _ALLOW
    return _ERRNO | (errno.ENOSYS if name in seccomp._LOOKS_ABSENT else errno.EPERM)


@pytest.mark.parametrize("machine", sorted(seccomp._ARCHES))
def test_every_system_call_gets_its_answer(machine):
    arch, numbers = seccomp._ARCHES[machine]
    names = {number: name for name, number in numbers.items()}
    program = seccomp._program(machine)
    assert len(program) // 8 < 256
    for nr in [*range(1024), 0x3FFFFFFF]:
        assert run(program, arch, nr)[0] == expected(names.get(nr)), (machine, nr, names.get(nr))
    for nr in (0x40000000, 0x40000000 + 41, 2**31 - 1, -1):  # x32 system calls, and what no ABI numbers
        assert run(program, arch, nr)[0] == _KILL
    for foreign in (0x40000003, 0xC000003E if machine != "x86_64" else 0xC00000B7):  # i386, the other 64-bit
        assert run(program, foreign, numbers["read" if "read" in numbers else "socket"])[0] == _KILL
        assert run(program, foreign, 0)[0] == _KILL


@pytest.mark.parametrize("machine", sorted(seccomp._ARCHES))
def test_arguments_are_checked(machine):
    arch, numbers = seccomp._ARCHES[machine]
    program = seccomp._program(machine)
    for value in (*seccomp.SAFE_PERSONALITIES, 0x0400000, 0x0040000, 1, 0xFFFFFFFE):
        assert run(program, arch, numbers["personality"], value)[0] == expected("personality", value), hex(value)
    flags = [1 << bit for bit in range(32)] + [0, 0x11, 0x01200011, 0x003D0F00]  # fork's and threads' flags too
    for name in ("clone", "unshare"):
        for value in flags:
            assert run(program, arch, numbers[name], value)[0] == expected(name, value), (name, hex(value))


@pytest.mark.parametrize("machine", sorted(seccomp._ARCHES))
def test_the_templates_filter_adds_only_its_own_clone(machine):
    """The template's filter (`install(flags)`, inherited by its children): every answer as above, except `clone`
    with exactly the template's namespace flags and SIGCHLD; not those flags otherwise, nor for `unshare`."""
    arch, numbers = seccomp._ARCHES[machine]
    names = {number: name for name, number in numbers.items()}
    own = 0x20000000 | 0x08000000  # CLONE_NEWPID | CLONE_NEWIPC
    program = seccomp._program(machine, own)
    for nr in [*range(1024), 0x3FFFFFFF]:
        assert run(program, arch, nr)[0] == expected(names.get(nr)), (machine, nr, names.get(nr))
    assert run(program, arch, numbers["clone"], own | 17)[0] == _ALLOW
    for value in (own, own | 18, own | 0x10000000 | 17, 0x20000000 | 17, 0x08000000 | 17, own | 0x100 | 17):
        assert run(program, arch, numbers["clone"], value)[0] == _ERRNO | errno.EPERM, hex(value)
    for value in (own | 17, own, 0x10000000):
        assert run(program, arch, numbers["unshare"], value)[0] == _ERRNO | errno.EPERM, hex(value)
    assert run(program, arch, numbers["clone"], 0x01200011)[0] == _ALLOW  # fork's own flags


@pytest.mark.parametrize("machine", sorted(seccomp._ARCHES))
def test_path_to_any_answer_is_short(machine):
    """Attaching runs the filter for every number (the kernel's cache of always-allowed calls): the cost is the
    longest path times about 450 numbers. A list was 85 instructions; the search stays short."""
    arch, _ = seccomp._ARCHES[machine]
    program = seccomp._program(machine)
    longest = max(run(program, arch, nr)[1] for nr in range(600))
    assert longest <= 16, longest
