"""The shared layer in process: mounted apps behind the same guard, pluggable verifiers, the caller in the scope,
and the body limit counted on streamed bodies too."""

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from local_code_interpreter import identity, server
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.settings import load


async def whoami(request):
    caller = request.scope[identity.SCOPE_KEY]
    return JSONResponse({"caller": caller.id, "kind": caller.kind, "root_path": request.scope["root_path"],
                         "path": request.url.path})


SESSIONS = Starlette(routes=[Route("/whoami", whoami)])  # routes relative to the mount point, as with Mount


async def entra(token: str):
    return identity.Caller("entra:tenant/object", "entra") if token == "a-valid-jwt" else None


def _run(env, calls):
    async def run():
        settings = load({"sandbox": "monty"}, environ=env)
        sandbox = create_sandbox("monty", settings.limits)
        app = server.build_app(settings, sandbox, mounts=[("/sessions", SESSIONS)], verifiers=[entra])
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
            return [await call(client) for call in calls]

    return asyncio.run(run())


def test_mounted_app_sees_the_caller_from_any_verifier():
    env = {"DEVUI_AUTH_TOKEN": "devui-token"}
    results = _run(env, [
        lambda c: c.get("/sessions/whoami", headers={"authorization": "Bearer devui-token"}),
        lambda c: c.get("/sessions/whoami", headers={"authorization": "Bearer a-valid-jwt"}),
        lambda c: c.get("/sessions/whoami", headers={"authorization": "Bearer forged"}),
        lambda c: c.get("/sessions/whoami"),
    ])
    assert results[0].json() == {"caller": "token", "kind": "token", "root_path": "/sessions",
                                 "path": "/sessions/whoami"}
    assert results[1].json()["caller"] == "entra:tenant/object"
    assert [r.status_code for r in results[2:]] == [401, 401]
    assert results[3].json()["error"]["code"] == "missing_token"


def test_loopback_without_token_is_local():
    (answer,) = _run({}, [lambda c: c.get("/sessions/whoami", headers={"authorization": "Bearer anything"})])
    assert answer.json()["caller"] == "local"


def test_streamed_body_over_the_limit_is_413():
    async def chunks():  # no Content-Length: the guard counts what arrives
        for _ in range(20):
            yield b"x" * 4096

    (answer,) = _run({"LCI_MAX_BODY_BYTES": "16384"}, [lambda c: c.post("/v1/responses", content=chunks())])
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


class BusySandbox:
    """A back end whose every slot is taken (what `Bounded` raises when its queue is full)."""

    name = "busy"

    async def start(self):
        pass

    async def run(self, code, language=None):
        from local_code_interpreter.sandbox import SandboxBusy

        raise SandboxBusy("all 4 execution slots are busy")

    async def close(self):
        pass


def test_sandbox_busy_is_429_plain_and_failed_event_when_streaming():
    import sys

    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from inprocess import app_client, sse_events

    async def run():
        async with app_client(sandbox=BusySandbox()) as (c, _s, _sb):
            plain = await c.post("/v1/responses", json={"input": "print(1)"})
            streamed = await c.post("/v1/responses", json={"input": "print(1)", "stream": True})
            return plain, streamed

    plain, streamed = asyncio.run(run())
    assert plain.status_code == 429 and plain.json()["error"]["code"] == "sandbox_busy"
    assert sse_events(streamed.text)[-1]["type"] == "response.failed"  # headers were already sent: 200 + failed


def test_off_loopback_with_only_an_entra_verifier():
    """No DEVUI_AUTH_TOKEN, a non-loopback bind, an Entra verifier: API clients with a valid token are served by
    the lean path; DevUI's own API stays closed (nobody holds its token); no token is 401."""

    async def run():
        settings = load({"sandbox": "monty", "host": "0.0.0.0"}, environ={})
        server.check_auth(settings, [entra])  # allowed: a verifier guards it
        sandbox = create_sandbox("monty", settings.limits)
        app = server.build_app(settings, sandbox, verifiers=[entra])
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://interp.example") as c:
            served = await c.post("/v1/responses", json={"input": "print(6*7)"},
                                  headers={"authorization": "Bearer a-valid-jwt"})
            devui = await c.get("/v1/entities", headers={"authorization": "Bearer a-valid-jwt"})
            anonymous = await c.post("/v1/responses", json={"input": "print(1)"})
            return served, devui, anonymous

    served, devui, anonymous = asyncio.run(run())
    assert served.status_code == 200 and "42" in served.text
    assert devui.status_code == 401 and anonymous.status_code == 401


def test_a_scoped_verifier_opens_only_its_prefix_and_its_body_limit_applies_there_only():
    """Entra ID tokens open the sessions API, not the DevUI or /v1/responses; larger bodies only where allowed."""
    from local_code_interpreter.http.guard import Guard

    async def echo(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        caller = scope[identity.SCOPE_KEY]
        data = f'{{"caller": "{caller.id}", "bytes": {len(body)}}}'.encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    async def run():
        app = Guard(echo, verifiers=[], max_body_bytes=1024, body_limits={"/sessions/": 4096},
                    scoped_verifiers={"/sessions/": [entra]})
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            jwt = {"authorization": "Bearer a-valid-jwt"}
            return [await client.post("/sessions/code/execute", headers=jwt, content=b"x" * 3000),
                    await client.post("/v1/responses", headers=jwt, content=b"{}"),
                    await client.get("/v1/entities", headers=jwt),
                    await client.post("/sessions/code/execute", headers=jwt, content=b"x" * 5000)]

    inside, responses, page, too_big = asyncio.run(run())
    assert inside.status_code == 200 and inside.json() == {"caller": "entra:tenant/object", "bytes": 3000}
    assert responses.status_code == 401 and page.status_code == 401
    assert too_big.status_code == 413


def test_request_bodies_in_flight_are_bounded_and_one_caller_holds_at_most_half():
    """Bodies are held (and uploads spooled to /tmp) until the request ends. At most twice the largest body a
    route accepts is received at once, and one caller at most half of that: Mallory's large uploads in flight
    cannot exhaust the replica's memory or disk, nor leave Alice no room."""
    from local_code_interpreter.http.guard import Guard

    release = asyncio.Event()

    async def slow(scope, receive, send):  # reads the body, then holds the request until released
        while (await receive()).get("more_body"):
            pass
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def verifier(token):
        return identity.Caller(token, "token")

    guard = Guard(slow, verifiers=[verifier], max_body_bytes=1000)
    assert (guard.bodies.total, guard.bodies.share) == (2000, 1000)

    async def post(token, size, chunked=False):
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"host", b"127.0.0.1")]
        headers.append((b"transfer-encoding", b"chunked") if chunked else (b"content-length", str(size).encode()))
        scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": headers,
                 "client": ("127.0.0.1", 1)}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        async def send(message):
            sent.append(message)

        await guard(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])

    async def scenario():
        held = [asyncio.create_task(post("mallory", 1000))]
        await asyncio.sleep(0.01)
        refused = await asyncio.wait_for(post("mallory", 10), 5)  # her half is taken
        held.append(asyncio.create_task(post("alice", 600)))  # Alice still has room
        await asyncio.sleep(0.01)
        full = await asyncio.wait_for(post("carol", 500), 5)  # 1600 + 500 > 2000: the replica's whole budget
        # no length: counted at the route's limit (1000)
        streamed = await asyncio.wait_for(post("carol", 300, chunked=True), 5)
        held.append(asyncio.create_task(post("carol", 300)))  # fits
        await asyncio.sleep(0.01)
        release.set()
        done = await asyncio.gather(*held)
        after = await post("mallory", 1000)  # given back when her request ended
        return refused, full, streamed, done, after

    refused, full, streamed, done, after = asyncio.run(scenario())
    assert refused[0] == 429 and refused[1][b"retry-after"] == b"1" and b"yours take" in refused[2]
    assert full[0] == 429 and b"they take" in full[2]
    assert streamed[0] == 429
    assert [status for status, _, _ in done] == [200, 200, 200] and after[0] == 200
    assert guard.bodies.used == 0


def test_a_one_shot_run_is_on_the_requesting_callers_behalf_so_the_gate_shares_it_fairly():
    """On a back end that keeps no sessions (Hyperlight in prod), the tool runs each program once, outside the
    session manager: the guard makes the request's caller the one the execution gate sees (`fair.OWNER`), so
    those runs are shared fairly between callers too."""
    from local_code_interpreter.fair import OWNER
    from local_code_interpreter.sandbox.bounded import Bounded
    from local_code_interpreter.sandbox.types import ExecutionResult

    seen = []

    class OneShot:  # no open_session: the tool falls back to a one-shot run
        name = "one-shot"

        async def run(self, code, language=None):
            seen.append(OWNER.get())
            return ExecutionResult("3\n", "", 0)

        async def close(self):
            pass

    async def run():
        settings = load({"sandbox": "monty"}, environ={"DEVUI_AUTH_TOKEN": "devui-token"})
        app = server.build_app(settings, Bounded(OneShot(), 2), verifiers=[entra])
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
            for token in ("devui-token", "a-valid-jwt"):
                answer = await client.post("/v1/responses", json={"model": "local-code-interpreter",
                                                                   "input": "print(1)"},
                                           headers={"authorization": f"Bearer {token}"})
                assert answer.status_code == 200, answer.text

    asyncio.run(run())
    assert seen == ["token", "entra:tenant/object"]
