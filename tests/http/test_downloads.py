"""A download (`http/downloads.py`) sends a session's file a piece at a time: the server never holds the file, the
client gets exactly the bytes it was told of, and the file is closed however the response ends."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc

import pytest

from local_code_interpreter.http.downloads import PIECE, Download
from local_code_interpreter.sandbox import files


def open_fds() -> dict:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return found


def serve(download: Download, method: str = "GET", disconnect_after: int | None = None,
          keep: bool = True) -> list[dict]:
    """The messages the download sends (without `keep`, each body as its length and the bodies' SHA-256 last, so
    the test holds no more than the download does); with `disconnect_after`, the client goes away after that many
    bodies."""
    sent: list[dict] = []
    digest = hashlib.sha256()
    gone = asyncio.Event()

    async def receive():
        await gone.wait()  # the request had no body: the next message a server gives is the disconnect
        return {"type": "http.disconnect"}

    async def send(message):
        if not keep and "body" in message:
            digest.update(message["body"])
            message = dict(message, body=len(message["body"]))
        sent.append(message)
        if disconnect_after is not None and sum(m["type"] == "http.response.body" for m in sent) >= disconnect_after:
            gone.set()
            await asyncio.sleep(0)  # the server notices the closed socket

    asyncio.run(download({"type": "http", "method": method}, receive, send))
    return sent if keep else [*sent, digest.hexdigest()]


@pytest.fixture
def session(tmp_path):
    """A session directory, after one download has run: what the first one in a process sets up once is not
    counted as a descriptor left open."""
    (tmp_path / "warm-up").write_bytes(b"w")
    serve(Download(files.open_file(tmp_path, "warm-up"), {}))
    return tmp_path


def test_a_large_file_goes_out_in_pieces_and_never_whole_in_memory(session):
    size = 20 * 1024 * 1024 + 5
    data = os.urandom(size)
    (session / "big.bin").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    del data
    before = open_fds()
    download = Download(files.open_file(session, "big.bin"), {"Content-Type": "application/octet-stream"})
    tracemalloc.start()
    try:
        *sent, digest = serve(download, keep=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    start, bodies = sent[0], sent[1:]
    assert start["status"] == 200 and (b"content-length", str(size).encode()) in start["headers"]
    assert (b"content-type", b"application/octet-stream") in start["headers"]
    assert [m["body"] for m in bodies] == [PIECE] * (size // PIECE) + [size % PIECE]
    assert [m["more_body"] for m in bodies] == [True] * (size // PIECE) + [False]
    assert digest == expected
    assert peak < 4 * PIECE + 1024 * 1024, f"the download held {peak} bytes at once"
    assert open_fds() == before


def test_head_and_an_empty_file_send_the_size_and_no_bytes(session):
    (session / "report.csv").write_bytes(b"a,b\n" * 10)
    (session / "empty.txt").write_bytes(b"")
    before = open_fds()
    head = serve(Download(files.open_file(session, "report.csv"), {}), method="HEAD")
    assert (b"content-length", b"40") in head[0]["headers"] and head[1:] == [{"type": "http.response.body",
                                                                             "body": b""}]
    empty = serve(Download(files.open_file(session, "empty.txt"), {}))
    assert (b"content-length", b"0") in empty[0]["headers"] and [m.get("body") for m in empty[1:]] == [b""]
    assert open_fds() == before


def test_a_client_that_goes_away_stops_the_reading_and_the_file_is_closed(session):
    (session / "big.bin").write_bytes(b"z" * (10 * PIECE))
    before = open_fds()
    sent = serve(Download(files.open_file(session, "big.bin"), {}), disconnect_after=2)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 2 and bodies[-1]["more_body"] is True
    assert open_fds() == before


def test_a_file_that_shrank_while_sent_ends_short_never_padded(session):
    """The client was told the size at the start: the response stops short (it does not complete, so the server
    closes the connection and the client sees an incomplete body) instead of inventing the missing bytes."""
    (session / "log.txt").write_bytes(b"l" * (3 * PIECE))
    opened = files.open_file(session, "log.txt")
    os.truncate(session / "log.txt", PIECE + 10)
    sent = serve(Download(opened, {}))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"l" * (PIECE + 10)
    assert all(m["more_body"] for m in bodies)  # never completed
