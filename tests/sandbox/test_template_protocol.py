"""The template's side of its control socket (`sandbox/template.py`): what it reads from the supervisor is taken
exactly as sent or refused, however its per-fork path is trimmed."""

from __future__ import annotations

import os
import socket

import pytest

from local_code_interpreter.sandbox import Limits
from local_code_interpreter.sandbox.template import _decode, _descriptors, _limits


def test_a_control_message_decodes_to_the_object_sent_non_ascii_included():
    assert _decode('{"op": "fork", "id": 7, "note": "café ☕"}  \n'.encode()) == \
        {"op": "fork", "id": 7, "note": "café ☕"}


@pytest.mark.parametrize("data", [
    b"", b"   ", b"nonsense", b'{"op": "fork"', b"[1, 2]", b'"fork"', b"3",
    b'{"op": "fork"} {"op": "kill"}',  # two messages in one datagram: not what the supervisor sends
    '{"op": "ø"}x'.encode(),  # trailing data after a non-ASCII character (a str index, not a byte index)
])
def test_anything_but_one_json_object_is_refused(data):
    with pytest.raises(ValueError):
        _decode(data)


def test_the_descriptors_passed_arrive_in_order_and_open():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reads = [os.pipe() for _ in range(3)]
    try:
        socket.send_fds(left, [b"{}"], [r for r, _ in reads])
        data, ancillary, _, _ = right.recvmsg(64, socket.CMSG_SPACE(4 * 4))
        fds = _descriptors(ancillary)
        assert data == b"{}" and len(fds) == 3
        for fd, (_, w) in zip(fds, reads):
            os.write(w, b"x%d" % w)
            assert os.read(fd, 16) == b"x%d" % w
            os.close(fd)
        assert _descriptors([]) == []
    finally:
        left.close()
        right.close()
        for r, w in reads:
            os.close(r)
            os.close(w)


def test_limits_are_built_once_per_distinct_fields_and_never_confused():
    fields = {"timeout_seconds": 5.0, "memory_mb": 256, "max_processes": 8, "max_open_files": 8}
    first = _limits(tuple(fields.items()))
    assert first == Limits(**fields) and _limits(tuple(dict(fields).items())) is first
    # the same values under other names are other limits
    swapped = {"timeout_seconds": 5.0, "memory_mb": 256, "max_processes": 8, "max_open_files": 9}
    assert _limits(tuple(swapped.items())).max_open_files == 9
    crossed = {"timeout_seconds": 5.0, "memory_mb": 256, "max_open_files": 8, "max_processes": 9}
    assert _limits(tuple(crossed.items())).max_processes == 9
