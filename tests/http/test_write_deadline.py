"""The write deadline (`http/connections.py`) on the protocol itself, with a transport whose unsent bytes the test
sets: a client that reads nothing for the deadline is cut off; one that reads some in each period is not, however
long its response takes. (The real server with clients that stop reading: tests/http/test_hostile.py.)"""

from __future__ import annotations

import asyncio

from local_code_interpreter.http.connections import protocol


class Transport:
    def __init__(self, unsent: int):
        self.unsent, self.aborted = unsent, False

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class Flow:
    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


def _connection(loop, transport):
    connection = object.__new__(protocol(10.0, 100, write_timeout=0.5))  # only what the write deadline uses
    connection.loop, connection.transport, connection.flow = loop, transport, Flow()
    return connection


def _deadline(connection) -> float:
    """Seconds until the write deadline fires (None when none is set)."""
    handle = connection._stalled
    return None if handle is None else round(handle.when() - connection.loop.time(), 1)


def test_a_client_that_reads_nothing_is_cut_off_after_the_deadline():
    async def run():
        transport = Transport(unsent=1 << 20)
        connection = _connection(asyncio.get_running_loop(), transport)
        connection.pause_writing()
        set_to = _deadline(connection)
        await asyncio.sleep(0.7)
        return set_to, transport.aborted

    assert asyncio.run(run()) == (0.5, True)


def test_a_client_that_reads_some_in_each_period_is_served_past_many_deadlines():
    """Each time the deadline comes, the client has read some since it was set: it is set again. The first time it
    has read nothing, it is cut off."""
    async def run():
        transport = Transport(unsent=1 << 20)
        connection = _connection(asyncio.get_running_loop(), transport)
        connection.pause_writing()
        for _ in range(20):
            transport.unsent -= 16 * 1024
            connection._stalled.cancel()
            connection._cut_off()  # the deadline comes
            if transport.aborted or _deadline(connection) != 0.5:
                return False
        connection._stalled.cancel()
        connection._cut_off()  # and comes again with nothing read
        return transport.aborted

    assert asyncio.run(run()) is True


def test_the_deadline_ends_when_the_client_catches_up_or_leaves():
    async def run():
        loop = asyncio.get_running_loop()
        caught_up, left = Transport(unsent=1 << 20), Transport(unsent=1 << 20)
        one, other = _connection(loop, caught_up), _connection(loop, left)
        one.pause_writing()
        other.pause_writing()
        one.resume_writing()
        other._unstall()  # as connection_lost does
        await asyncio.sleep(0.7)
        return caught_up.aborted, left.aborted, one._stalled, other._stalled

    assert asyncio.run(run()) == (False, False, None, None)
