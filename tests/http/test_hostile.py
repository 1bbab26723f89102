"""Hostile HTTP clients against the real server process: authentication before the body, malformed input always a
4xx in the OpenAI error shape, slow and idle clients closed or displaced so `/health` keeps answering."""

import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager

import httpx
import pytest

from service import clean_env, running_service, with_health_behind
from skips import tool_missing

TOKEN = "hostile-test-token-0123456789"


@contextmanager
def server_process(env: dict[str, str], nofile: int | None = None):
    """The service on a free loopback port, optionally with RLIMIT_NOFILE set in the child before exec; yields
    (base_url, port, process), with the service's output in `process.log`."""
    def limit():
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    # The log goes to a file: a pipe nobody reads would block the server once it filled.
    with tempfile.TemporaryFile(mode="w+") as log, \
            running_service(clean_env(**env), ready_timeout=60, log=log, preexec_fn=limit) as (base, process, _s):
        process.log = log
        yield base, httpx.URL(base).port, process


def raw(port: int, data: bytes, read_timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


@pytest.fixture(scope="module")
def with_token():
    with server_process({"DEVUI_AUTH_TOKEN": TOKEN, "LCI_READ_TIMEOUT_SECONDS": "1"}) as running:
        yield running


@pytest.mark.parametrize("body_header, body", [
    (b"Content-Length: 1073741824\r\n", b"{" * 1000),  # a gigabyte announced, never sent
    (b"Transfer-Encoding: chunked\r\n", b"3e8\r\n" + b"{" * 1000),  # a body of unknown length, never ended
])
def test_unauthenticated_huge_body_gets_401_before_any_body_is_read(with_token, body_header, body):
    _, port, _ = with_token
    started = time.monotonic()
    answer = raw(port, b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + body_header + b"\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - started < 1.0  # answered at once, not after reading (or waiting for) the body


@pytest.mark.parametrize("body", [b"garbage", b"{" * 100000, b'{"input": NaN}', b"\xff\xfe"])
def test_unauthenticated_garbage_gets_401_in_openai_shape(with_token, body):
    base, _, _ = with_token
    answer = httpx.post(f"{base}/v1/responses", content=body, headers={"authorization": "Bearer wrong"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_token"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_token_holder_is_served_and_page_shell_is_public(with_token):
    base, _, _ = with_token
    answer = httpx.post(f"{base}/v1/responses", json={"input": "print(6*7)"},
                        headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200 and "42" in answer.text
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_wrong_host_header_is_refused(with_token):
    base, _, _ = with_token
    answer = httpx.get(f"{base}/health", headers={"host": "evil.example"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "host_not_allowed"


@pytest.fixture(scope="module")
def open_server():
    with server_process({"LCI_READ_TIMEOUT_SECONDS": "1"}) as running:
        yield running


def _nested(depth: int) -> bytes:
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("body, words", [
    (_nested(100000), "nested deeper"),
    (_nested(40), "nested deeper"),
    (b'{"input": "print(1)", "temperature": NaN}', "NaN"),
    (b'{"input": "print(1)", "temperature": Infinity}', "Infinity"),
    (b'{"input": "print(1)", "top_p": -Infinity}', "Infinity"),
    (b'{"input": 5}', "input"),
    (b'{"input": [5]}', "object"),
    (b'{"input": [{"role": "robot", "content": "x"}]}', "role"),
    (b'{"input": [{"role": "user", "content": 7}]}', "content"),
    (b'{"input": [{"type": "input_text", "text": 7}]}', "text"),
    (b'{"input": [{"type": "bogus"}]}', "Unsupported"),
    (b'{"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}', "no function_call before it"),
    (b'{"input": [{"type": "function_call", "call_id": 5, "name": "execute_code"}]}', "call_id"),
    (b'{"input": "print(\\"\\ud800\\")"}', "surrogate"),
    (b'{"input": "print(1)", "stream": "yes"}', "stream"),
    (b'{"input": "print(1)", "model": 3}', "model"),
    (b'{"input": "print(1)", "metadata": []}', "metadata"),
    (b'{"input": "print(1)", "metadata": {"k": 1}}', "metadata"),
    (b'{"input": "print(1)", "previous_response_id": 5}', "previous_response_id"),
    (b'{"input": "print(1)", "previous_response_id": "resp_x", "conversation": "c"}', "mutually exclusive"),
    (b'{"input": "print(1)", "conversation": {"id": 5}}', "conversation"),
    (b'{"input": "print(1)", "max_output_tokens": true}', "max_output_tokens"),
    (b'{"input": "print(1)", "max_output_tokens": 0}', "max_output_tokens"),
    (b'{"input": "print(1)", "tools": "all"}', "tools"),
    (b'"just a string"', "JSON object"),
    (b"\xff\xfe\x00", "JSON object"),
])
def test_malformed_input_is_4xx_in_openai_shape(open_server, body, words):
    base, _, _ = open_server
    answer = httpx.post(f"{base}/v1/responses", content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text[:300]
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "code"} and words in error["message"], error


@pytest.mark.parametrize("request_", [
    b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /sessions/code/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n",
], ids=["bad chunk", "length and chunked", "negative length", "huge length", "bad header name"])
def test_what_the_http_parser_refuses_is_a_400_in_the_openai_error_shape(open_server, request_):
    base, port, _ = open_server
    answer = raw(port, request_)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower(), answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http_request" and "invalid HTTP request" in error["message"], error
    assert httpx.get(f"{base}/health").status_code == 200


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def _pipelined(count: int) -> bytes:
    body = b'{"input": "print(6*7)"}'
    return (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)) * count


def test_a_few_pipelined_requests_are_each_answered_in_order(open_server):
    _, port, _ = open_server
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(_pipelined(5))
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 5 or not received.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, received[-300:]
            received += chunk
    assert received.count(b"HTTP/1.1 ") == 5 and received.count(b"42") >= 5


def test_a_client_that_pipelines_thousands_of_requests_cannot_grow_the_server(open_server):
    """Uvicorn alone queued every pipelined request (its headers and body) and read on after each response: 6 MB
    of requests never read grew the server by 150 MiB within seconds. Past 16 queued, the connection is closed."""
    base, port, process = open_server
    before = _rss_mib(process.pid)
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setblocking(False)
        flood, sent, deadline = _pipelined(50000), 0, time.monotonic() + 10
        try:
            while sent < len(flood) and time.monotonic() < deadline:
                try:
                    sent += s.send(flood[sent:sent + 65536])
                except BlockingIOError:
                    time.sleep(0.01)
        except OSError:
            pass  # reset: the server closed the connection with our requests unread
        time.sleep(2)  # what the server would have read and queued meanwhile
        grown = _rss_mib(process.pid) - before
        s.settimeout(1)
        reading = time.monotonic() + 5  # a server that serves the whole flood answers for minutes
        try:
            while (chunk := s.recv(65536)) and time.monotonic() < reading:
                received += chunk
        except OSError:
            pass
    assert grown < 20, (before, grown)
    assert b"503 Service Unavailable" in received and b"too many pipelined requests" in received, received[:300]
    assert httpx.get(f"{base}/health").status_code == 200


@pytest.mark.parametrize("head", [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 3_000_000,  # 24 MB of small headers
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"b" * 30_000_000,  # one header, never ending
    b"GET /health?" + b"a" * 30_000_000,  # a request line, never ending
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 300 + b"\r\n",  # a small head, many headers
], ids=["many headers", "huge header", "huge request line", "300 headers"])
def test_an_unauthenticated_head_too_large_gets_431_and_cannot_grow_the_server(with_token, head):
    """llhttp sets no limit on a request line or headers, and uvicorn keeps every header as Python objects: 24 MB
    of headers sent in half a second grew the server by 270 MiB, before any authentication could run."""
    base, port, process = with_token
    before = _rss_mib(process.pid)
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setblocking(False)
        sent, deadline = 0, time.monotonic() + 5
        try:
            while sent < len(head) and time.monotonic() < deadline:
                try:
                    sent += s.send(head[sent:sent + (1 << 20)])
                except BlockingIOError:
                    time.sleep(0.005)
        except OSError:
            pass  # reset: the server closed it with the rest unread
        grown = _rss_mib(process.pid) - before
        s.settimeout(2)
        try:
            while chunk := s.recv(65536):
                received += chunk
        except OSError:
            pass
    assert grown < 20, (before, grown)
    assert received.startswith(b"HTTP/1.1 431 "), received[:300]
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"]["code"] == "headers_too_large"
    assert httpx.get(f"{base}/health").status_code == 200


def test_a_head_within_the_limits_is_served(with_token):
    base, _, _ = with_token
    headers = {f"x-h{i}": "v" * 200 for i in range(200)}  # 200 headers, about 42 KiB
    answer = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert answer.status_code == 200, answer.text[:300]


@pytest.mark.parametrize("upgrade", [b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                                     b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk\r\n"],
                         ids=["websocket", "h2c"])
def test_an_upgrade_is_ignored_and_the_request_served_as_http(with_token, upgrade):
    """Nothing here speaks WebSocket: uvicorn handed such a connection to its WebSocket protocol (outside the
    connection deadlines and cap) for a 403 and two log lines each; now the request is served as HTTP/1.1."""
    base, port, process = with_token
    process.log.seek(0, 2)
    logged = process.log.tell()
    request = (b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
               + upgrade + b"\r\n")
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for follow in (request, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):  # the connection goes on
            s.sendall(follow)
            while not received.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, received[-300:]
                received += chunk
            received += b" "
    assert received.count(b"HTTP/1.1 200 OK") == 2, received[:500]
    assert b"local-code-interpreter" in received and b'"status": "healthy"' in received, received[:500]
    time.sleep(0.3)
    process.log.seek(logged)
    lines = process.log.read().splitlines()
    assert not [line for line in lines if "WebSocket" in line or "pgrade" in line], lines


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("upgrade", [
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
], ids=["h2c", "websocket"])
def test_an_upgrade_request_keeps_its_body_and_what_follows_it(with_token, upgrade, framing):
    """llhttp ends an upgrade request at its headers (the rest would be the new protocol's): the body reached the app
    empty (400) and a request sent after it on the connection was never answered. `curl --http2` sends a POST to an
    http:// URL this way. Now both are read as HTTP/1.1: the code runs and the next request is answered."""
    _, port, _ = with_token
    body = json.dumps({"input": "print(6*7)"}).encode()
    framed = (b"Content-Length: %d\r\n\r\n" % len(body) + body if framing == "content-length"
              else b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 9 + body[:9] + b"\r\n"
              + b"%x\r\n" % (len(body) - 9) + body[9:] + b"\r\n0\r\n\r\n")
    request = (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + upgrade + framed)
    received = with_health_behind("127.0.0.1", port, request, timeout=30)
    first, _, second = received.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(b"HTTP/1.1 ")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and second.startswith(b"200 OK"), received[:600]
    answer = json.loads(first.partition(b"\r\n\r\n")[2])
    assert answer["status"] == "completed"
    assert "42" in json.dumps(answer["output"]), answer["output"]


def test_curl_http2_on_an_http_url_is_served(with_token):
    """The real client that sends a POST with `Upgrade: h2c`: `curl --http2` on an http:// URL (its request is the
    h2c case above). Its code runs, and it reads the answer as HTTP/1.1."""
    curl = shutil.which("curl")
    if curl is None or "HTTP2" not in subprocess.run([curl, "--version"], capture_output=True, text=True).stdout:
        tool_missing("curl with HTTP/2 is not installed", "curl.sh")
    base, _, _ = with_token
    done = subprocess.run([curl, "-sS", "--http2", "--max-time", "30", "-w", "\n%{http_code} %{http_version}",
                           "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json",
                           "-d", json.dumps({"input": "print(6*7)"}), f"{base}/v1/responses", "-v"],
                          capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    assert "Upgrade: h2c" in done.stderr, done.stderr[-2000:]  # what makes this case: curl asked to upgrade
    assert status == "200 1.1", (status, body[-500:])
    assert json.loads(body)["status"] == "completed" and "42" in body, body[-500:]


def test_an_upgrade_request_whose_body_has_no_valid_framing_is_a_400(with_token):
    """llhttp accepts `Transfer-Encoding: gzip` alone in an upgrade request (it reads no body of one), which it
    refuses in any other request: the body cannot be read, so the answer is the 400 of any unreadable framing."""
    base, port, _ = with_token
    answer = raw(port, b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                 + b"\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nTransfer-Encoding: gzip\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert httpx.get(f"{base}/health").status_code == 200


def test_unknown_previous_response_is_404(open_server):
    base, _, _ = open_server
    answer = httpx.post(f"{base}/v1/responses", json={"input": "print(1)", "previous_response_id": "resp_nope"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "previous_response_not_found"


def test_slow_headers_are_closed_after_the_read_timeout(open_server):
    _, port, _ = open_server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        started = time.monotonic()
        assert s.recv(100) == b""  # closed by the server
        waited = time.monotonic() - started
    assert 0.5 < waited < 5, waited


@pytest.mark.parametrize("upgrade", [b"", b"Upgrade: h2c\r\nConnection: Upgrade\r\n"], ids=["plain", "upgrade"])
def test_slowloris_body_is_closed_after_the_read_timeout(open_server, upgrade):
    """A body that never ends is closed at the read deadline; an upgrade request's too (parsed by a parser of ours)."""
    base, port, _ = open_server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + upgrade
                  + b"Content-Length: 1000\r\n\r\n{\"input\": ")
        started = time.monotonic()
        try:
            for _ in range(20):  # a byte now and then, never the whole body
                s.sendall(b" ")
                time.sleep(0.25)
        except OSError:
            pass
        waited = time.monotonic() - started
        assert s.recv(100) == b""
    assert waited < 4, waited
    assert httpx.get(f"{base}/health").status_code == 200


def test_idle_connection_without_a_request_is_closed(open_server):
    _, port, _ = open_server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(100) == b""
    assert time.monotonic() - started < 5


def test_health_answers_with_1000_idle_connections_at_nofile_1024():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"this test needs 1200 open files in the test process; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    sockets = []
    try:
        with server_process({"LCI_READ_TIMEOUT_SECONDS": "120", "LCI_MAX_SESSIONS": "60"}, nofile=1024) \
                as (base, port, process):
            limits = open(f"/proc/{process.pid}/limits").read()
            assert any(line.startswith("Max open files") and " 1024 " in line for line in limits.splitlines())
            with httpx.Client(base_url=base, timeout=30) as client:  # a replica full of live sessions
                for i in range(60):
                    assert client.post("/v1/responses", json={"input": f"x = {i}"}).status_code == 200
            for _ in range(1000):
                s = socket.socket()
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                sockets.append(s)
            time.sleep(0.5)  # let the server accept them all
            started = time.monotonic()
            answer = httpx.get(f"{base}/health", timeout=10)
            assert answer.status_code == 200, answer.text
            real = httpx.post(f"{base}/v1/responses", json={"input": "print(6*7)"}, timeout=30)
            assert real.status_code == 200 and "42" in real.text
            print(f"\n/health with 1000 idle connections at nofile 1024: {(time.monotonic() - started) * 1000:.0f} ms")
            open_fds = len(__import__("os").listdir(f"/proc/{process.pid}/fd"))
            assert open_fds < 1024
            assert process.poll() is None
            process.log.seek(0)
            # the cap leaves room for the accept burst and for every session's descriptors
            assert "Too many open files" not in process.log.read()
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_clients_that_stop_reading_a_download_hold_no_memory_and_are_cut_off():
    """Twenty clients ask for a 30 MiB file and read none of it, filling the connection cap. Before downloads were
    sent a piece at a time, each held the whole file in the server's memory for as long as it stayed connected
    (20 such: +604 MiB). Now the server holds a piece each; at the cap a new client displaces the one stalled
    longest; after the write deadline every one is cut off; and a client that reads gets the file whole."""
    size = 30 << 20
    data = os.urandom(size)
    env = {"LCI_WRITE_TIMEOUT_SECONDS": "2", "LCI_MAX_CONNECTIONS": "20"}
    with server_process(env) as (base, port, process):
        made = httpx.post(f"{base}/v1/containers/stalled/files", files={"file": ("big.bin", data)}, timeout=60)
        assert made.status_code == 200, made.text
        path = f"/v1/containers/stalled/files/{made.json()['id']}/content"
        rss_before, fds_before = _rss_mib(process.pid), len(os.listdir(f"/proc/{process.pid}/fd"))
        stalled = []
        for _ in range(20):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            stalled.append(s)
        try:
            time.sleep(0.5)
            held = _rss_mib(process.pid) - rss_before
            assert held < 60, f"20 stalled downloads hold {held:.0f} MiB of the server's memory"
            health = httpx.get(f"{base}/health", timeout=5)  # the cap is full of clients that do not read
            assert health.status_code == 200, health.text
            time.sleep(2.5)  # the write deadline (2 s) has passed for each
            for s in stalled:
                s.settimeout(5)
                received = 0
                try:
                    while chunk := s.recv(1 << 20):
                        received += len(chunk)
                except ConnectionResetError:
                    pass
                except TimeoutError:
                    pytest.fail("a client that read nothing was still connected 1 s after its write deadline")
                assert received < size, "a stalled client was kept connected until it had the whole file"
        finally:
            for s in stalled:
                s.close()
        whole = httpx.get(f"{base}{path}", timeout=60)
        assert whole.status_code == 200 and whole.content == data
        time.sleep(0.5)
        assert len(os.listdir(f"/proc/{process.pid}/fd")) <= fds_before + 1


def test_bounded_conversations_item_too_large_is_413():
    with running_service(env=clean_env(LCI_CONVERSATION_ITEM_MAX_BYTES="2048")) as (base, _, _s):
        answer = httpx.post(f"{base}/v1/responses", json={"input": "print(1)  # " + "x" * 4000})
        assert answer.status_code == 413 and "LCI_CONVERSATION_ITEM_MAX_BYTES" in answer.json()["error"]["message"]
        assert httpx.post(f"{base}/v1/responses", json={"input": "print(1)"}, timeout=30).status_code == 200


def test_json_log_format_and_access_log_switch():
    env = clean_env(LCI_LOG_FORMAT="json", LCI_ACCESS_LOG="on")
    with running_service(env=env) as (base, process, _s):
        for i in range(5):
            assert httpx.post(f"{base}/v1/responses", json={"input": f"print({i})"}, timeout=30).status_code == 200
        process.terminate()
        process.wait(10)
        lines = [line for line in process.stdout.read().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    access = [e for e in entries if e["logger"] == "local_code_interpreter.access"]
    assert len(access) == 5 and all(e["status"] == 200 and e["path"] == "/v1/responses" for e in access)
    with running_service(env=clean_env(LCI_ACCESS_LOG="off")) as (base, process, _s):
        for i in range(5):
            httpx.post(f"{base}/v1/responses", json={"input": f"print({i})"}, timeout=30)
        process.terminate()
        process.wait(10)
        assert "/v1/responses" not in process.stdout.read()
