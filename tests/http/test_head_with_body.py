"""A response's head goes out with its body (`http/connections.py`, `HeadWithBody`): one write where uvicorn makes
two, so a client wakes once for a whole answer. On the wrapper with a transport that records its writes, and on the
real service, where a client's first read holds the whole answer."""

from __future__ import annotations

import asyncio
import socket

import pytest

from local_code_interpreter.http.connections import HeadWithBody
from service import running_service


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 7


def _run(steps):
    async def run():
        transport = Recording()
        await steps(HeadWithBody(transport, asyncio.get_running_loop()), transport)
        await asyncio.sleep(0)  # the end of the turn: a held head is written by now
        return transport

    return asyncio.run(run())


def test_head_and_body_written_in_the_same_turn_go_out_as_one_write():
    async def steps(wrapped, _):
        wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        wrapped.write(b"{}")

    assert _run(steps).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_head_whose_body_is_not_ready_goes_out_alone_at_the_end_of_the_turn():
    """A stream waiting for its first event: its client has the head at once, not when the event comes."""
    seen = []

    async def steps(wrapped, transport):
        wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        seen.append(list(transport.writes))  # held during the turn
        await asyncio.sleep(0.01)
        seen.append(list(transport.writes))
        wrapped.write(b"5\r\nfirst\r\n")
        wrapped.write(b"6\r\nsecond\r\n")

    transport = _run(steps)
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert seen == [[], [head]]
    assert transport.writes == [head, b"5\r\nfirst\r\n", b"6\r\nsecond\r\n"]  # only the head is ever held


def test_a_large_body_is_not_copied_onto_the_head():
    body = b"x" * (HeadWithBody.MERGE_LIMIT + 1)

    async def steps(wrapped, _):
        wrapped.write(b"HTTP/1.1 200 OK\r\n\r\n")
        wrapped.write(body)

    writes = _run(steps).writes
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\n", body]


def test_close_writes_a_held_head_first_and_a_closed_transport_gets_nothing():
    async def closes(wrapped, transport):
        wrapped.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        wrapped.close()

    transport = _run(closes)
    assert (transport.writes, transport.closed) == ([b"HTTP/1.1 204 No Content\r\n\r\n"], True)

    async def closed_meanwhile(wrapped, transport):
        wrapped.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.close()  # the protocol closed the connection (its client left, a refusal)

    assert _run(closed_meanwhile).writes == []


def test_everything_else_is_the_transports():
    async def steps(wrapped, transport):
        assert wrapped.get_write_buffer_size() == 7 and not wrapped.is_closing()

    _run(steps)


@pytest.fixture(scope="module")
def service():
    with running_service() as (base, _, _):
        yield int(base.rsplit(":", 1)[1])


def _whole(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:")]
    return bool(lengths) and len(body) == int(lengths[0])


def test_a_clients_first_read_holds_the_whole_answer(service):
    """The client reads as soon as it has sent (it sleeps in `recv` until something arrives): with the head written
    apart, it woke for the head alone in 49 of these 60 requests here."""
    body = b'{"model": "local-code-interpreter", "input": "print(6*7)"}'
    post = (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    partial = []
    with socket.create_connection(("127.0.0.1", service), timeout=30) as connection:
        for index in range(60):
            connection.sendall(post if index % 3 == 0 else health)
            first = connection.recv(1 << 20)
            if not _whole(first):
                partial.append(first[:80])
                rest = first
                while not _whole(rest):  # read the rest, so the next request starts clean
                    chunk = connection.recv(1 << 20)
                    assert chunk, rest[-300:]
                    rest += chunk
            assert b"200 OK" in first
    assert partial == []
