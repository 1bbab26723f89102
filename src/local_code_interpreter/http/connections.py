"""Slow, idle and greedy clients cannot starve the server.

Uvicorn's HTTP protocol with these additions:
- a read deadline: a connection must deliver a whole request (headers and body) within `read_timeout` seconds of
  opening, of starting the request, or of its previous response; otherwise it is closed (slowloris, idle
  sockets, a body that never ends);
- a write deadline: a client that reads nothing of its response for `write_timeout` seconds while the server has
  more to send (its socket buffer and the transport's are full) is cut off, so it does not hold its request, its
  file or its stream for ever; a slow reader that reads some in each period is served however long it takes;
- a connection cap below the process's file limit: at the cap, a new connection displaces the connection that
  has been waiting longest for its client, to send its request or to read its response (a client that holds
  sockets open without sending, or without reading, gets them closed, so `/health` and real clients still get in);
  when every connection is busy with a request its client keeps up with, the new one gets 503.

What the HTTP parser refuses (bad framing, a bad header, a negative or huge length) is a 400 in the OpenAI error
shape, as every other refusal of ours, where uvicorn writes plain text.

Pipelining is bounded: uvicorn queues every request a client sends ahead of the responses (each with its headers
and body in memory) and reads on after each response, so one client that pipelined 6 MB of small requests without
reading grew the server by 150 MiB. A connection that queues more than `max_pipelined` requests behind the one
running is closed (503 when nothing of the running one's response was sent yet).

So are request heads: llhttp sets no limit on a request line or headers, and uvicorn keeps each header as Python
objects, so one unauthenticated connection that sent 24 MB of headers in half a second grew the server by 270 MiB.
A request line and headers longer than `head_limit` bytes, or more than `max_headers` headers, get 431 and the
connection is closed. (While a head is incomplete, what arrives is parsed a slice at a time, so the limit is
checked before much more than it is parsed; a body is parsed as it comes.)

HTTP/1.1 only: an `Upgrade` header (WebSocket, h2c) is ignored, as RFC 9110 (7.8) allows, and the request served as
it is. Nothing here speaks WebSocket; uvicorn handed such a connection to its WebSocket protocol, outside the
deadlines and the cap above, for a 403 and two log lines each. llhttp ends an upgrade request at its headers and
leaves the rest of the connection's bytes unparsed (they would be the new protocol's): its body (`curl --http2` on an
`http://` URL sends `Upgrade: h2c` with a POST's) reached the app empty, and what the client sent after it was never
answered. Those bytes are parsed as HTTP/1.1 instead: the body with the framing the request declared, then the
requests that follow.
"""

from __future__ import annotations

import logging
import resource

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import error_body

log = logging.getLogger(__name__)


def _closing_answer(status: bytes, body: bytes, headers=()) -> bytes:
    """A whole HTTP/1.1 answer of a JSON `body`, written before the connection closes (no ASGI app involved)."""
    head = [b"HTTP/1.1 ", status, b"\r\n"]
    for name, value in headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.append(b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body))
    return b"".join(head) + body


_BUSY = _closing_answer(b"503 Service Unavailable", error_body(503, "too many connections", "overloaded"))
_REFUSALS = {431: (b"431 Request Header Fields Too Large", "headers_too_large"),
             503: (b"503 Service Unavailable", "overloaded")}
HEAD_LIMIT = 64 * 1024  # bytes of a request line and headers (nginx: 4 x 8 KiB, Node.js: 16 KiB)
MAX_HEADERS = 256
_SLICE = 8 * 1024  # what is parsed at a time while a head is incomplete
MAX_PIPELINED = 16  # requests a connection may queue behind the one running


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The header that frames a request's body (`transfer-encoding` before `content-length`, as RFC 9112 6.3 has
    it), or None when it has none."""
    framing = dict(headers)  # names are lower case (uvicorn's `on_header`)
    if b"transfer-encoding" in framing:
        return b"transfer-encoding: " + framing[b"transfer-encoding"]
    length = framing.get(b"content-length", b"").strip()
    return b"content-length: " + length if length and length.strip(b"0") else None


def _reserve() -> tuple[int, int]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return soft, max(128, soft // 4)


def default_max_connections(sandbox_descriptors: int = 0) -> int:
    """Below the open-file limit, leaving room for what the sandbox may hold open (`sandbox_descriptors`: its
    children's pipes and directories, every session at once), logs, the listening socket, and one accept burst
    (`accept_backlog()`): the cap is enforced once a connection is made, and the event loop accepts up to a
    backlog of sockets before any of them is made."""
    soft, reserve = _reserve()
    return max(16, soft - reserve - sandbox_descriptors)


def accept_backlog() -> int:
    """The listen backlog, which also bounds one accept burst (asyncio accepts up to `backlog` sockets per loop
    iteration). A socket is accepted two iterations before its `connection_made` can displace another, so three
    bursts can be open at once beyond the cap: a quarter of the reserve each, the last quarter for the process's
    own descriptors (uvicorn's default of 2048 could exhaust the limit alone)."""
    return max(16, min(2048, _reserve()[1] // 4))


def protocol(read_timeout: float, max_connections: int, write_timeout: float = 30.0) -> type[HttpToolsProtocol]:
    """A uvicorn `http=` protocol class with these deadlines and cap."""

    class GuardedHttp(_Guarded):
        pass

    GuardedHttp.read_timeout, GuardedHttp.max_connections = read_timeout, max_connections
    GuardedHttp.write_timeout = write_timeout
    return GuardedHttp


class HeadWithBody:
    """The transport as one request's cycle sees it: its response's head goes out with the first piece of its body.

    Uvicorn writes a response's head (`http.response.start`) and its body in two writes: two TCP segments, and a
    client that wakes up for the head, finds no body and sleeps again until the second (under `strace` the two
    writes were 0.4 ms apart with no system call between them; an `http.client` caller woke 1.33 times per request,
    1.00 with this). Here the head is held until the body's first write in the same turn of the event loop, and
    the two are written as one; a head whose body is not ready by the end of that turn (a stream still waiting for
    its first event) is written alone then, so nothing waits on it. A body piece above `MERGE_LIMIT` bytes is not
    copied onto the head: they go as two writes, as before."""

    MERGE_LIMIT = 64 * 1024

    def __init__(self, transport, loop) -> None:
        self._transport, self._loop = transport, loop
        self._held: bytes | None = None
        self._flush = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._held is not None:
            head, self._held = self._held, None
            self._flush.cancel()
            if len(data) <= self.MERGE_LIMIT:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif self._first and not self._transport.is_closing():
            self._first = False
            self._held = bytes(data)
            self._flush = self._loop.call_soon(self._write_held)
            return
        self._transport.write(data)

    def _write_held(self) -> None:
        head, self._held = self._held, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        if self._held is not None:
            self._flush.cancel()
            self._write_held()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)  # anything else uvicorn may use of it (is_closing...), as it is


class _Guarded(HttpToolsProtocol):
    read_timeout = 10.0
    write_timeout = 30.0
    max_connections = 1000
    _deadline = None
    _stalled = None  # the write deadline, while the transport's buffer is full
    _unsent = 0  # what the transport held unsent when the deadline was set
    _stalled_since: float | None = None  # loop time since which its client has not emptied the transport's buffer
    _waiting_since: float | None = None  # loop time since which it waits for a request; None while one runs
    max_pipelined = MAX_PIPELINED
    _running = None  # the request cycle being served
    _refused = False  # the connection is closing for what it sent: the rest of its bytes are ignored
    head_limit, max_headers = HEAD_LIMIT, MAX_HEADERS
    _in_head = True  # what arrives belongs to a request's line or headers (or, between requests, the next one's)
    _head_bytes = 0
    _headers = 0
    _framing: bytes | None = None  # an upgrade request's body framing header, while llhttp has skipped its body
    _framing_head = False  # the parser is reading the head made of that header alone (`_parse_on_as_http`)

    def _should_upgrade(self) -> bool:
        return False

    def _unsupported_upgrade_warning(self) -> None:
        pass  # ignored, not refused: nothing worth a line per request

    def send_400_response(self, msg: str) -> None:
        body = error_body(400, f"invalid HTTP request: {msg}", "invalid_http_request")
        self.transport.write(_closing_answer(b"400 Bad Request", body, self.server_state.default_headers))
        self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._displace_one():
            transport.write(_BUSY)
            transport.close()
        super().connection_made(transport)
        self._arm()

    def _displace_one(self) -> bool:
        """Abort the connection that has waited longest for its client: for its request, or to read its response."""
        oldest, since = None, None
        for other in self.connections:
            waiting = getattr(other, "_waiting_since", None)
            if waiting is None:
                waiting = getattr(other, "_stalled_since", None)
            if waiting is not None and (since is None or waiting < since):
                oldest, since = other, waiting
        if oldest is None:
            return False
        oldest._disarm()
        oldest._unstall()
        transport = oldest.transport
        transport.abort()  # idle, or its client reads nothing: nothing to flush
        sock = getattr(transport, "_sock", None)
        if sock is not None:  # free its descriptor now, not on the next loop iteration (abort stopped watching it)
            sock.close()
        self.connections.discard(oldest)  # its connection_lost comes later from the loop
        return True

    def _arm(self) -> None:
        self._disarm()
        self._waiting_since = self.loop.time()
        self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing a connection that did not deliver its request within %.0f s", self.read_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        start = 0
        while self._in_head and start < len(data) and not self._refused and not self.transport.is_closing():
            piece = data[start:start + _SLICE]  # the whole of it (no copy) when it is small: most requests
            start += len(piece)
            self._head_bytes += len(piece)
            self._feed(piece)
            if self._in_head and self._head_bytes > self.head_limit:
                return self._refuse(431, f"the request line and headers are longer than {self.head_limit} bytes")
        if start < len(data) and not self._refused:
            self._feed(data[start:] if start else data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's `data_received`, but an upgrade request (ignored: `_should_upgrade`) does not end the parse."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._invalid()
        except httptools.HttpParserUpgrade as upgrade:
            self._parse_on_as_http(data[upgrade.args[0]:])

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _parse_on_as_http(self, rest: bytes) -> None:
        """What follows an upgrade request's head, parsed as HTTP/1.1 by a new parser: first the request's body, if
        it declared one (a head of its framing header alone, which makes no request of its own, sets the parser to
        read it into the request's cycle), then the next requests."""
        self.parser = httptools.HttpRequestParser(self)
        framing, self._framing = self._framing, None
        if framing is not None:
            self._framing_head = True
            try:
                self.parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
            except httptools.HttpParserError:  # a framing llhttp lets pass only in an upgrade request (`gzip` alone)
                self._framing_head = False
                return self._invalid()
        if rest and not self.transport.is_closing():
            self.data_received(rest)

    def on_message_begin(self) -> None:
        if self._refused or self._framing_head:
            return
        self._head_bytes = self._headers = 0
        super().on_message_begin()
        self._arm()  # the request now has `read_timeout` to arrive whole

    def on_url(self, url: bytes) -> None:
        if not self._framing_head:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused or self._framing_head:
            return
        self._headers += 1
        if self._headers > self.max_headers:
            return self._refuse(431, f"the request has more than {self.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        if self._framing_head:  # the made-up head: the request it frames is the last one parsed (`self.cycle`)
            self._framing_head = False
            return
        super().on_headers_complete()
        if self.parser.should_upgrade():  # llhttp reads no body of an upgrade request: `_parse_on_as_http` will
            self._framing = _body_framing(self.headers)
        if len(self.pipeline) > self.max_pipelined:
            self._refuse(503, "too many pipelined requests on one connection: send a request after the previous "
                              "response")

    def _start_asgi_task(self, cycle, app) -> None:
        self._running = cycle
        cycle.transport = HeadWithBody(cycle.transport, self.loop)
        super()._start_asgi_task(cycle, app)

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (unless a response has started) and close: queued requests are dropped unanswered, the
        running one's response is cut off (its run stops as for any client that leaves, `stopping.py`); the
        parser's callbacks on what follows do nothing."""
        self._refused = True
        self.pipeline.clear()
        self._disarm()
        log.warning("closed a connection: %s", message)
        if self._running is None or self._running.response_complete or not self._running.response_started:
            line, code = _REFUSALS[status]
            self.transport.write(_closing_answer(line, error_body(status, message, code)))
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused or self._framing is not None:  # the latter: a body llhttp skipped is still to come
            return
        self._in_head = True  # what comes next is the next request's
        super().on_message_complete()
        self._disarm()
        self._waiting_since = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport is not None and not self.transport.is_closing() and self.cycle is not None \
                and self.cycle.response_complete and not self.pipeline:
            self._arm()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled_since = self.loop.time()
            self._arm_write()

    def _arm_write(self) -> None:
        self._unsent = self.transport.get_write_buffer_size()
        self._stalled = self.loop.call_later(self.write_timeout, self._cut_off)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def _unstall(self) -> None:
        self._stalled_since = None
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _cut_off(self) -> None:
        self._stalled = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() < self._unsent:  # it read some (nothing is added while paused)
            self._arm_write()
            return
        log.debug("cut off a client that read nothing of its response for %.0f s", self.write_timeout)
        self.transport.abort()  # close() would wait to send what it buffered: to a client that does not read

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._unstall()
        self._waiting_since = None
        super().connection_lost(exc)
