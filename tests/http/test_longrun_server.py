"""The real server as a pod runs it (subprocess back end, sessions, spares, eviction), for thousands of requests: what
must not grow does not grow. tests/http/test_longrun.py covers the serving path in process on monty; this one covers
what only the production back end has: sandbox processes, scratch directories, descriptors, threads, sessions kept
per replica, and memory (the server's, and that of the templates every child is forked from), while most requests
start a conversation (a new session, then evictions), some continue one, an eighth are streamed, a sixteenth
download a file their code wrote (half of them giving up half-way), and a thirty-second come as `curl --http2` sends
them (`Upgrade: h2c`, on a connection of their own, with a request pipelined behind: `http/connections.py` parses
both with a parser of its own). The other APIs' traffic is mixed in: a sixteenth go to the sessions API (synchronous
and asynchronous executions, uploads, listings and deletions, across more identifiers than the replica keeps
sessions), and a sixteenth create a conversation, answer in it and delete it."""

import json
import os
import tempfile
import time

import httpx
import pytest

from service import clean_env, running_service, with_health_behind

pytestmark = pytest.mark.slow

REQUESTS = 2000
WARM = 200
MAX_SESSIONS = 6


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(p) for p in f.read().split()]
                found += children
                pending += children
        except OSError:
            continue
    return found


def _scratch_roots(pid: int) -> set[str]:
    """The sandbox roots the server holds open: one per template (warm and lean)."""
    roots = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        name = target.removeprefix(tempfile.gettempdir() + "/").split("/")[0]
        if name.startswith("lci-sandbox-"):
            roots.add(os.path.join(tempfile.gettempdir(), name))
    assert roots, os.listdir(f"/proc/{pid}/fd")
    return roots


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f)


def _templates(pid: int) -> list[int]:
    """The server's own children: the sandbox templates (warm and lean), which every child is forked from."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        templates = [int(p) for p in f.read().split()]
    for template in templates:
        with open(f"/proc/{template}/cmdline", "rb") as f:
            assert b"sandbox.template" in f.read(), template
    return templates


def _measure(pid: int, roots: set[str]) -> dict:
    status, templates = _status(pid), _templates(pid)
    return {"processes": len(_descendants(pid)), "scratch entries": sum(len(os.listdir(r)) for r in roots),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(status["Threads"]),
            "rss_kib": int(status["VmRSS"].split()[0]),
            # A template's fork copies its page tables and its children share its pages: a template that grew
            # would make every later fork, child and exit cost more.
            "template anon_kib": sum(int(_status(t)["RssAnon"].split()[0]) for t in templates),
            "template fds": sum(len(os.listdir(f"/proc/{t}/fd")) for t in templates)}


def _settled(pid: int, roots: set[str]) -> dict:
    """Each figure's least over a second of quiet: a spare being forked or an evicted session being cleaned up in
    the background holds a few descriptors (and a worker thread) for a moment; a leak holds them for good."""
    samples = []
    for _ in range(10):
        samples.append(_measure(pid, roots))
        time.sleep(0.1)
    return {key: min(sample[key] for sample in samples) for key in samples[0]}


def test_the_production_back_end_does_not_grow_over_thousands_of_requests():
    env = clean_env(LCI_MAX_SESSIONS=str(MAX_SESSIONS), LCI_ACCESS_LOG="off")
    with tempfile.TemporaryFile(mode="w+") as log, running_service(env=env, log=log) as (base, process, _):
        previous = None

        def serve(i: int) -> None:
            nonlocal previous
            body = {"input": f"print({i}*3)"}
            if i % 8 == 5:  # an eighth streamed: the helpers in a task of their own, the call's events beside
                with client.stream("POST", "/v1/responses", json=dict(body, stream=True)) as streamed:
                    text = "".join(streamed.iter_text())
                assert "response.code_interpreter_call.interpreting" in text and str(i * 3) in text, text[-500:]
                assert text.rstrip().split("\n")[0] == "event: response.created"
                return
            if i % 16 == 9:  # a sixteenth write a file of 1 MiB and download it; half of those give up half-way
                return download(i)
            if i % 16 == 3:
                return sessions_api(i)
            if i % 16 == 13:
                return conversation(i)
            if i % 32 == 17:
                return upgrade(i)
            if i % 4 == 0 and previous:  # a quarter continue a conversation, the rest start one
                body["previous_response_id"] = previous
            answer = client.post("/v1/responses", json=body)
            assert answer.status_code == 200 and str(i * 3) in answer.text, answer.text[:500]
            previous = answer.json()["id"]

        def download(i: int) -> None:
            code = f"open('out.bin', 'wb').write(b'{i % 10}' * (1 << 20))\nprint({i}*3)"
            answer = client.post("/v1/responses", json={"input": code})
            assert answer.status_code == 200 and str(i * 3) in answer.text, answer.text[:500]
            container = next(item["container_id"] for item in answer.json()["output"]
                             if item["type"] == "code_interpreter_call")
            listed = client.get(f"/v1/containers/{container}/files").json()["data"]
            path = f"/v1/containers/{container}/files/{listed[0]['id']}/content"
            with client.stream("GET", path) as content:
                assert content.status_code == 200 and content.headers["content-length"] == str(1 << 20)
                if i % 32 == 9:
                    next(content.iter_raw(65536))  # and goes away: the server stops reading and closes the file
                    return
                assert content.read() == str(i % 10).encode() * (1 << 20)

        def sessions_api(i: int) -> None:
            """An identifier of 12 (twice the replica's sessions): executions, an upload, a listing, a deletion."""
            query = {"api-version": "2025-02-02-preview", "identifier": f"longrun-{i % 12}"}
            if i % 32 == 3:  # asynchronous: started, then read back
                started = client.post("/sessions/executions", params=query,
                                      json={"code": f"print({i}*3)", "executionType": "Asynchronous"})
                assert started.status_code == 202, started.text[:500]
                location = started.headers["operation-location"].replace("/sessions", "", 1)
                for _ in range(200):
                    polled = client.get(f"/sessions{location.split('?')[0]}", params=query).json()
                    if polled["status"] != "Running":
                        break
                    time.sleep(0.01)
                assert polled["status"] == "Succeeded" and str(i * 3) in polled["result"]["stdout"], polled
                return
            answer = client.post("/sessions/executions", params=query, json={"code": f"print({i}*3)"})
            assert answer.status_code == 202 and str(i * 3) in answer.json()["result"]["stdout"], answer.text[:500]
            uploaded = client.post("/sessions/files", params=query, files={"file": (f"f{i}.txt", b"x" * 1000)})
            assert uploaded.status_code == 200, uploaded.text[:500]
            names = [entry["name"] for entry in client.get("/sessions/files", params=query).json()["value"]]
            assert f"f{i}.txt" in names, names
            assert client.delete(f"/sessions/files/f{i}.txt", params=query).status_code == 204

        def upgrade(i: int) -> None:
            data = json.dumps({"input": f"print({i}*3)"}).encode()
            request = (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
            received = with_health_behind(url.host, url.port, request)
            assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1 200 ") == 2, received[:500]
            assert str(i * 3).encode() in received, received[:1000]

        def conversation(i: int) -> None:
            created = client.post("/v1/conversations", json={"items": [{"role": "user", "content": "hello"}]})
            assert created.status_code == 200, created.text[:500]
            conversation_id = created.json()["id"]
            answer = client.post("/v1/responses", json={"input": f"print({i}*3)", "conversation": conversation_id})
            assert answer.status_code == 200 and str(i * 3) in answer.text, answer.text[:500]
            assert client.delete(f"/v1/conversations/{conversation_id}").status_code == 200

        url = httpx.URL(base)
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(WARM):
                serve(i)
            roots = _scratch_roots(process.pid)
            before = _settled(process.pid, roots)
            for i in range(WARM, REQUESTS):
                serve(i)
            after = _settled(process.pid, roots)
            assert _scratch_roots(process.pid) == roots  # no root is replaced or added as requests go on
        log.seek(0)
        output = log.read()
    print(f"\nafter {WARM} requests: {before}\nafter {REQUESTS} requests: {after}")
    # Sessions are bounded by the replica's maximum; their processes and directories with them (plus the spares
    # and the template, whose count is fixed).
    assert after["processes"] <= before["processes"] + 2, (before, after)
    assert after["scratch entries"] <= before["scratch entries"] + 2, (before, after)
    assert after["fds"] <= before["fds"] + 8, (before, after)
    assert after["threads"] <= before["threads"] + 2, (before, after)
    assert after["rss_kib"] - before["rss_kib"] < 32 * 1024, (before, after)  # conversations are bounded too
    assert after["template anon_kib"] - before["template anon_kib"] < 2 * 1024, (before, after)
    assert after["template fds"] <= before["template fds"], (before, after)
    assert "Traceback" not in output and "ERROR" not in output, output[-3000:]
