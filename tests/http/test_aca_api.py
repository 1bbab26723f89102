"""The sessions API's HTTP layer: routes, JSON shapes of both API families, bad input, and who may call it.

The session engine is replaced by `Recorder`, an in-memory manager with the SessionManager interface that
records each call and returns the ExecutionResult a test sets, so each test pins one mapping (engine result →
API response, engine error → status). The real engine behind the same routes is exercised by
tests/e2e/test_aca_clients.py. Entra ID tokens are signed here with a key the verifier fetches from the
Entra stand-in (TLS, test CA) exactly as from a tenant's JWKS.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e.fake_entra import Entra, EntraHandler, Signer
from e2e.tls import https_server, make_ca
from inprocess import devui_stand_in
from local_code_interpreter.auth.entra import EntraSettings, EntraVerifier
from local_code_interpreter.http.aca import build_aca_app
from local_code_interpreter.http.guard import Guard
from local_code_interpreter.server import Router, guard
from local_code_interpreter.sandbox.types import (ExecutionResult, FileInfo, Image, InvalidFileName,
                                                  QuotaExceeded, SandboxBusy)
from local_code_interpreter.settings import Settings
from opened import opened

TENANT = "72f988bf-0000-4000-8000-000000000001"
TOKEN = "devui-secret-token"
V1, V2 = "2024-02-02-preview", "2024-10-02-preview"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


class Recorder:
    """SessionManager's interface over dicts: files per key, executions recorded, results set by the test."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.stored: dict[tuple, dict[str, tuple[bytes, float]]] = {}
        self.result = ExecutionResult("", "", 0)
        self.error: Exception | None = None
        self.delay = 0.0

    async def run(self, key, code):
        self.calls.append(("run", key, code))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.result

    async def upload(self, key, name, data):
        self.calls.append(("upload", key, name, len(data)))
        if self.error:
            raise self.error
        self.stored.setdefault(key, {})[name] = (data, 1714634467.9922617)
        return FileInfo(name, len(data), 1714634467.9922617)

    async def files(self, key):
        return [FileInfo(n, len(d), m) for n, (d, m) in sorted(self.stored.get(key, {}).items())]

    async def read(self, key, name):
        try:
            return self.stored[key][name][0]
        except KeyError:
            raise FileNotFoundError(name) from None

    async def open_file(self, key, name):
        return opened(await self.read(key, name))

    async def delete(self, key, name):
        if name not in self.stored.get(key, {}):
            raise FileNotFoundError(name)
        del self.stored[key][name]

    async def close(self, key, interrupt=False):
        self.calls.append(("close", key, interrupt))
        return self.stored.pop(key, None) is not None


@pytest.fixture
def manager():
    return Recorder()


def served(app, entra=None) -> Guard:
    """The sessions API as the server composes it: behind the shared guard (authentication, its body caps and
    error shape under /sessions, Entra ID tokens there only), mounted at /sessions beside a DevUI stand-in."""
    if isinstance(app, Guard):
        return app
    router = Router(devui_stand_in, devui_stand_in, devui_stand_in, [("/sessions", app)])
    return guard(app.state.api.settings, router, sessions=True, entra=entra)


def client_for(app, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=served(app)), base_url="http://127.0.0.1/sessions",
                             headers=headers)


def settings(**extra) -> Settings:
    return Settings(auth_token=TOKEN, **extra)


def call(app, method, path, token=TOKEN, **kwargs) -> httpx.Response:
    async def go():
        async with client_for(app, token) as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())



def q(version=V1, ident="s-1", **extra) -> dict:
    return {"api-version": version, "identifier": ident, **extra}


def execute_body(code="1+1", **extra) -> dict:
    return {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code, **extra}}


# -- execution shapes --------------------------------------------------------------------------------------

def test_execute_returns_the_hosted_shape_with_the_last_value(manager):
    manager.result = ExecutionResult("hi\n", "", 0, duration_ms=12.4, value="42")
    response = call(build_aca_app(manager, settings()), "POST", "/code/execute", params=q(), json=execute_body("print('hi')\n6*7"))
    assert response.status_code == 200
    assert response.json() == {"$id": "1", "properties": {
        "$id": "2", "status": "Success", "stdout": "hi\n", "stderr": "", "result": 42,
        "executionTimeInMilliseconds": 12}}
    assert manager.calls == [("run", ("token", "s-1"), "print('hi')\n6*7")]


@pytest.mark.parametrize("value, expected", [("'text'", "text"), ("[1, 2.5, None]", [1, 2.5, None]),
                                             ("<object at 0x1>", "<object at 0x1>"), (None, ""),
                                             ("nan", "nan"), ("{'a': (1, 2)}", {"a": [1, 2]})])
def test_result_is_json_where_the_value_is_a_literal_else_its_repr(manager, value, expected):
    manager.result = ExecutionResult("", "", 0, value=value)
    body = call(build_aca_app(manager, settings()), "POST", "/code/execute", params=q(), json=execute_body()).json()
    assert body["properties"]["result"] == expected


def test_a_figure_comes_back_as_an_image_result(manager):
    manager.result = ExecutionResult("", "", 0, value="<Figure>", images=[Image("image/png", PNG)])
    props = call(build_aca_app(manager, settings()), "POST", "/code/execute", params=q(), json=execute_body()).json()["properties"]
    assert props["result"] == {"type": "image", "format": "png", "base64_data": base64.b64encode(PNG).decode()}


def test_exception_is_a_failure_with_the_traceback_in_stderr(manager):
    trace = "Traceback (most recent call last):\n  File \"<cell>\", line 1\nZeroDivisionError: division by zero\n"
    manager.result = ExecutionResult("before\n", trace, 1)
    app = build_aca_app(manager, settings())
    props = call(app, "POST", "/code/execute", params=q(), json=execute_body("print('before'); 1/0")).json()["properties"]
    assert props["status"] == "Failure" and props["stdout"] == "before\n" and props["stderr"] == trace
    flat = call(app, "POST", "/executions", params=q(V2), json={"code": "1/0", "executionType": "Synchronous"}).json()
    assert flat["status"] == "Failed"
    assert (flat["rawResult"]["error_name"], flat["rawResult"]["error_message"]) == ("ZeroDivisionError", "division by zero")


def test_timeout_is_a_failure_that_says_so(manager):
    manager.result = ExecutionResult("tick\n", "", 124, timed_out=True, duration_ms=2000.0)
    props = call(build_aca_app(manager, settings()), "POST", "/code/execute", params=q(),
                 json=execute_body("while True: pass")).json()["properties"]
    assert props["status"] == "Failure" and props["stdout"] == "tick\n"
    assert "TimeoutError" in props["stderr"] and "timed out" in props["stderr"]
    assert props["executionTimeInMilliseconds"] == 2000


def test_executions_returns_the_2024_10_shape(manager):
    manager.result = ExecutionResult("x\n", "", 0, duration_ms=3, value="3")
    response = call(build_aca_app(manager, settings()), "POST", "/executions", params=q(V2, "abc"),
                    json={"codeInputType": "inline", "executionType": "Synchronous", "code": "print('x')\n1+2",
                          "timeoutInSeconds": 100})
    assert response.status_code == 202
    body = response.json()
    assert body["identifier"] == body["sessionId"] == "abc" and body["status"] == "Succeeded"
    assert body["executionType"] == "synchronous"
    assert body["result"] == {"stdout": "x\n", "stderr": "", "executionResult": 3, "executionTimeInMilliseconds": 3}
    assert body["rawResult"]["operationId"] == body["id"] == response.headers["operation-id"]


def test_asynchronous_execution_is_polled_at_its_operation_location(manager, entra):
    manager.result, manager.delay = ExecutionResult("late\n", "", 0, value="7"), 0.3
    app = entra_app(manager, entra, allowed_object_ids=frozenset({"*"}))

    async def scenario():
        async with client_for(app) as client:
            started = await client.post("/executions", params=q(V2, "job"), json={
                "codeInputType": "inline", "executionType": "Asynchronous", "code": "import time; time.sleep(1); 7"})
            assert started.status_code == 202, started.text
            assert started.json()["status"] == "Running" and "result" not in started.json()
            location = started.headers["operation-location"]
            assert location.startswith(f"/sessions/executions/{started.json()['id']}?api-version={V2}&identifier=job")
            polled = await client.get(location.removeprefix("/sessions"))
            assert polled.json()["status"] == "Running"
            await asyncio.sleep(0.5)
            done = (await client.get(location.removeprefix("/sessions"))).json()
            assert done["status"] == "Succeeded" and done["result"]["executionResult"] == 7
            assert done["result"]["stdout"] == "late\n" and done["id"] == started.json()["id"]
            other = await client.get(location.removeprefix("/sessions"), headers={"authorization": f"Bearer {sign(entra)}"})
            assert other.status_code == 404  # another caller cannot read it
            wrong = await client.get(location.removeprefix("/sessions").replace("identifier=job", "identifier=other"))
            assert wrong.status_code == 404
    asyncio.run(scenario())


def _start(client, ident, headers=None):
    return client.post("/executions", params=q(V2, ident), headers=headers, json={
        "codeInputType": "inline", "executionType": "Asynchronous", "code": "1"})


async def _hers_then_ten_of_mine(client, alice: dict) -> tuple[httpx.Response, list[str]]:
    """Alice (an Entra ID principal) starts one asynchronous execution, then Mallory (the shared token) ten, each
    finished before the next; Mallory's operation locations, oldest first."""
    hers = await _start(client, "a", alice)
    assert hers.status_code == 202, hers.text
    await asyncio.sleep(0.05)
    mine = []
    for _ in range(10):
        started = await _start(client, "m")
        assert started.status_code == 202, started.text
        mine.append(started.headers["operation-location"].removeprefix("/sessions"))
        await asyncio.sleep(0.02)
    return hers, mine


def test_one_callers_asynchronous_executions_neither_push_out_anothers_result_nor_take_every_slot(
        manager, entra, monkeypatch):
    """Mallory (the shared token) and Alice (an Entra ID principal) on one replica. Past the bound on kept
    results, Mallory's oldest go, not Alice's unread one; and Mallory cannot hold every running slot."""
    import local_code_interpreter.http.aca as aca

    monkeypatch.setattr(aca, "MAX_KEPT_OPERATIONS", 4)
    monkeypatch.setattr(aca, "MAX_RUNNING_OPERATIONS", 4)
    monkeypatch.setattr(aca, "MAX_RUNNING_OPERATIONS_PER_CALLER", 2)
    manager.result = ExecutionResult("", "", 0, value="7")
    app = entra_app(manager, entra, allowed_object_ids=frozenset({"*"}))
    alice = {"authorization": f"Bearer {sign(entra)}"}

    async def scenario():
        async with client_for(app) as client:
            hers, mine = await _hers_then_ten_of_mine(client, alice)
            kept = await client.get(hers.headers["operation-location"].removeprefix("/sessions"), headers=alice)
            assert kept.status_code == 200 and kept.json()["status"] == "Succeeded", kept.text
            assert (await client.get(mine[0])).status_code == 404  # her oldest went instead
            assert (await client.get(mine[-1])).json()["status"] == "Succeeded"

            manager.delay = 2.0
            assert [(await _start(client, "m")).status_code for _ in range(3)] == [202, 202, 429]
            refused = await _start(client, "m")
            assert "of yours are running" in refused.json()["error"]["message"]
            assert (await _start(client, "a", alice)).status_code == 202  # room is left for others
    asyncio.run(scenario())


def test_kept_results_are_bounded_in_bytes_and_one_caller_drops_its_own_first(manager, entra, monkeypatch):
    """A kept result holds its output and figures (up to 8 MiB): 24 kept results with figures grew the real server
    by 229 MiB, so 1,024 of them could hold gigabytes. Past the byte bound the oldest finished one of the caller
    holding the most bytes goes, never Alice's single unread one."""
    import local_code_interpreter.http.aca as aca

    monkeypatch.setattr(aca, "MAX_KEPT_OPERATION_BYTES", 5000)
    manager.result = ExecutionResult("x" * 1000, "", 0, images=[Image("image/png", PNG)])  # 1,264 bytes
    sessions_app = build_aca_app(manager, settings())
    api = sessions_app.state.api
    app = entra_app(manager, entra, sessions_app, allowed_object_ids=frozenset({"*"}))
    alice = {"authorization": f"Bearer {sign(entra)}"}

    async def scenario():
        async with client_for(app) as client:
            hers, mine = await _hers_then_ten_of_mine(client, alice)
            kept = await client.get(hers.headers["operation-location"].removeprefix("/sessions"), headers=alice)
            assert kept.status_code == 200 and kept.json()["result"]["stdout"] == "x" * 1000, kept.text[:300]
            assert [(await client.get(location)).status_code for location in mine] == [404] * 8 + [200] * 2
            assert api.kept_bytes.total == sum(op.size for op in api.operations.values()) == 3 * 1264 <= 5000
    asyncio.run(scenario())


# -- files -------------------------------------------------------------------------------------------------

def multipart(name: str, data: bytes) -> dict:
    return {"files": {"file": (name, data, "application/octet-stream")}}


def test_upload_list_download_delete_properties_family(manager):
    app = build_aca_app(manager, settings())
    data = bytes(range(256)) * 3
    up = call(app, "POST", "/files/upload", params=q(), **multipart("/mnt/data/data.bin", data))
    assert up.status_code == 200
    assert up.json() == {"$id": "1", "value": [{"$id": "2", "properties": {
        "$id": "3", "filename": "data.bin", "size": 768, "lastModifiedTime": "2024-05-02T07:21:07.992262Z"}}]}
    call(app, "POST", "/files/upload", params=q(), **multipart("b.txt", b"hello"))
    listing = call(app, "GET", "/files", params=q()).json()
    assert [(e["properties"]["filename"], e["properties"]["size"]) for e in listing["value"]] == [("b.txt", 5), ("data.bin", 768)]
    assert len({listing["$id"], *(e["$id"] for e in listing["value"]), *(e["properties"]["$id"] for e in listing["value"])}) == 5
    down = call(app, "GET", "/files/content/data.bin", params=q())
    assert down.status_code == 200 and down.content == data
    assert call(app, "DELETE", "/files/data.bin", params=q()).status_code == 200
    assert call(app, "GET", "/files/content/data.bin", params=q()).status_code == 404


def test_a_downloaded_file_cannot_run_as_a_page_of_this_origin(manager):
    """What the code wrote comes back as every other route sends it: saved, not rendered, never run as ours."""
    app = build_aca_app(manager, settings())
    page = b"<script>fetch('/v1/responses', {method: 'POST'})</script>"
    for name, params, path in (("p.html", q(), "/files/content/p.html"), ("p.svg", q(V2), "/files/p.svg/content")):
        assert call(app, "POST", "/files/upload", params=q(), **multipart(name, page)).status_code == 200
        down = call(app, "GET", path, params=params)
        assert down.status_code == 200 and down.content == page
        assert down.headers["content-type"] == "application/octet-stream"
        assert down.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in down.headers["content-security-policy"]
        assert down.headers["content-disposition"].startswith("attachment;")
    assert call(app, "POST", "/files/upload", params=q(), **multipart("b.txt", b"hi")).status_code == 200
    text = call(app, "GET", "/files/content/b.txt", params=q())
    assert text.headers["content-type"].startswith("text/plain") and text.content == b"hi"


def test_upload_list_download_delete_flat_family(manager):
    app = build_aca_app(manager, settings())
    up = call(app, "POST", "/files", params=q(V2, path="/mnt/data"), **multipart("r.md", b"# hi"))
    assert up.json() == {"name": "r.md", "sizeInBytes": 4, "lastModifiedAt": "2024-05-02T07:21:07.992262Z",
                         "contentType": "text/markdown", "type": "File"}
    assert call(app, "GET", "/files", params=q(V2)).json()["value"][0]["name"] == "r.md"
    assert call(app, "GET", "/files/r.md", params=q(V2)).json()["sizeInBytes"] == 4
    assert call(app, "GET", "/files/r.md/content", params=q(V2)).content == b"# hi"
    assert call(app, "DELETE", "/files/r.md", params=q(V2)).status_code == 204
    assert call(app, "GET", "/files/r.md", params=q(V2)).status_code == 404


def test_multipart_body_under_a_stale_json_content_type_is_still_an_upload(manager):
    """What Semantic Kernel 1.45 sends after an execution: its client's JSON content type over a multipart body."""
    app = build_aca_app(manager, settings())
    request = httpx.Request("POST", "http://x/", files={"file": ("/mnt/data/s.bin", b"\x00\xff" * 50, "application/octet-stream")})
    body = request.read()
    response = call(app, "POST", "/files/upload", params=q(), content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert manager.stored[("token", "s-1")]["s.bin"][0] == b"\x00\xff" * 50


def test_upload_into_a_subdirectory_with_path(manager):
    app = build_aca_app(manager, settings())
    call(app, "POST", "/files", params=q(V2, path="/mnt/data/in"), **multipart("x.csv", b"a,b"))
    assert manager.calls[-1] == ("upload", ("token", "s-1"), "in/x.csv", 3)
    assert [e["name"] for e in call(app, "GET", "/files", params=q(V2, path="/mnt/data/in")).json()["value"]] == ["x.csv"]


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", "/mnt/data/../x", "a//b", "a/./b"])
def test_traversal_in_names_is_refused_before_the_engine(manager, name):
    app = build_aca_app(manager, settings())
    response = call(app, "POST", "/files/upload", params=q(), **multipart(name, b"x"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidFileName"
    assert not [c for c in manager.calls if c[0] == "upload"]
    for path in ("/files/content/..%2F..%2Fetc%2Fpasswd", "/files/content/%2Fetc%2Fpasswd"):
        assert call(app, "GET", path, params=q()).status_code in (400, 404)


def test_name_rules():
    from local_code_interpreter.http.aca import ApiError, file_name
    assert file_name("/mnt/data/a/b.txt") == "a/b.txt" and file_name("b.txt", "/mnt/data/in/") == "in/b.txt"
    for bad, directory in [("nul\x00", None), ("x" * 256, None), ("a", "/etc"), ("a", "/mnt/database")]:
        with pytest.raises(ApiError):
            file_name(bad, directory)


def test_oversized_upload_is_413_and_nothing_is_stored(manager):
    from local_code_interpreter.sessions import SessionLimits  # the engine's cap, shared with the API
    app = build_aca_app(manager, settings(sessions=SessionLimits(max_upload_mb=1)))
    big = b"x" * (1024 * 1024 + 1)
    response = call(app, "POST", "/files/upload", params=q(), **multipart("big.bin", big))
    assert response.status_code == 413 and response.json()["error"]["code"] == "RequestEntityTooLarge"
    assert manager.stored == {}

    async def chunked():  # no content-length: the stream itself is counted
        yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(40):
            yield b"y" * 65536

    response = call(app, "POST", "/files/upload", params=q(),
                    headers={"content-type": "multipart/form-data; boundary=zz"}, content=chunked())
    assert response.status_code == 413
    assert call(app, "POST", "/files/upload", params=q(), **multipart("ok.bin", b"x" * 1024)).status_code == 200


def test_engine_errors_map_to_the_api_error_shape(manager):
    app = build_aca_app(manager, settings())
    cases = [(SandboxBusy("all 4 sessions are busy"), 429, "TooManyRequests"),
             (QuotaExceeded("disk quota"), 413, "RequestEntityTooLarge"),
             (InvalidFileName("bad"), 400, "InvalidFileName"),
             (RuntimeError("boom"), 500, "InternalServerError")]
    for error, status, code in cases:
        manager.error = error
        response = call(app, "POST", "/code/execute", params=q(), json=execute_body())
        assert response.status_code == status, (error, response.text)
        assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"] == "internal error (see the server log)"  # nothing leaks
    manager.error = None
    assert call(app, "POST", "/code/execute", params=q(), json=execute_body()).status_code == 200


@pytest.mark.parametrize("params, body, status, code", [
    ({"identifier": "s"}, execute_body(), 400, "MissingApiVersionParameter"),
    ({"api-version": "2023-01-01", "identifier": "s"}, execute_body(), 400, "UnsupportedApiVersion"),
    ({"api-version": V1}, execute_body(), 400, "MissingIdentifier"),
    ({"api-version": V1, "identifier": "has space"}, execute_body(), 400, "InvalidIdentifier"),
    ({"api-version": V1, "identifier": "x" * 129}, execute_body(), 400, "InvalidIdentifier"),
    (q(), b"{not json", 400, "InvalidRequestBody"),
    (q(), [1, 2], 400, "InvalidRequestBody"),
    (q(), {"code": "1"}, 400, "InvalidRequestBody"),
    (q(), execute_body(""), 400, "InvalidRequestBody"),
    (q(), execute_body("1", codeInputType="url"), 400, "InvalidRequestBody"),
    (q(), execute_body("1", executionType="asynchronous"), 400, "InvalidRequestBody"),
    (q(), execute_body("1", timeoutInSeconds=0), 400, "InvalidRequestBody"),
    (q(), execute_body("1", timeoutInSeconds="9"), 400, "InvalidRequestBody"),
    # Strict JSON, as on the other JSON routes: a nesting bomb was a RecursionError, a 500 and a logged traceback
    (q(), b'{"properties": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "InvalidRequestBody"),
    (q(), b'{"properties": {"code": "1", "timeoutInSeconds": NaN}}', 400, "InvalidRequestBody"),
    (q(), b'{"properties": {"code": "print(\'\\ud800\')"}}', 400, "InvalidRequestBody"),
])
def test_bad_requests_get_a_clear_400_and_run_nothing(manager, params, body, status, code):
    app = build_aca_app(manager, settings())
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = call(app, "POST", "/code/execute", params=params, **kwargs)
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    assert response.json()["error"]["message"]
    assert manager.calls == []


def test_oversized_json_and_malformed_multipart(manager):
    app = build_aca_app(manager, settings())
    response = call(app, "POST", "/code/execute", params=q(), content=b" " * (5 * 1024 * 1024),
                    headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = call(app, "POST", "/files/upload", params=q(), content=b"not multipart",
                    headers={"content-type": "application/json"})
    assert response.status_code == 400
    response = call(app, "POST", "/files/upload", params=q(), content=b"--zz\r\ngarbage",
                    headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidRequestBody"
    assert manager.calls == []


def test_unknown_routes_and_methods_use_the_error_shape_and_others_reach_devui(manager):
    app = build_aca_app(manager, settings())
    assert call(app, "GET", "/nope", params=q()).json()["error"]["code"] == "NotFound"
    assert call(app, "PUT", "/code/execute", params=q()).status_code == 405
    async def devui():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served(app)), base_url="http://127.0.0.1",
                                     headers={"authorization": f"Bearer {TOKEN}"}) as client:
            return (await client.get("/v1/responses")).status_code, (await client.get("/sessionsX")).status_code
    assert asyncio.run(devui()) == (418, 418)


def test_delete_session_closes_the_callers_session(manager):
    app = build_aca_app(manager, settings())
    call(app, "POST", "/files/upload", params=q(), **multipart("a", b"1"))
    assert call(app, "DELETE", "/session", params=q("2025-10-02-preview")).status_code == 204
    assert manager.calls[-1] == ("close", ("token", "s-1"), True)  # running code is stopped, not waited for


# -- who may call ------------------------------------------------------------------------------------------

def test_no_token_or_a_wrong_one_is_401_and_runs_nothing(manager):
    app = build_aca_app(manager, settings())
    for token in (None, "wrong"):
        response = call(app, "POST", "/code/execute", token=token, params=q(), json=execute_body())
        assert response.status_code == 401 and response.json()["error"]["code"] == "Unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert manager.calls == []


def test_loopback_without_any_token_configured_is_the_local_caller(manager):
    app = build_aca_app(manager, Settings())
    call(app, "POST", "/code/execute", token=None, params=q(), json=execute_body("1"))
    assert manager.calls == [("run", ("local", "s-1"), "1")]


@pytest.fixture(scope="module")
def entra(tmp_path_factory):
    """The Entra stand-in publishing a signing key; yield (verifier, signer, issuer)."""
    pki = make_ca(tmp_path_factory.mktemp("pki"))
    state = Entra(TENANT, "client-id", signer=Signer(roles=("Sessions.Execute",)))
    with https_server(EntraHandler, pki) as server:
        server.state = state
        context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        yield server, state, context


def entra_app(manager, entra, sessions_app=None, **allowed):
    server, state, context = entra
    config = EntraSettings(TENANT, authority=server.url, **allowed)
    return served(sessions_app or build_aca_app(manager, settings()),
                  entra=EntraVerifier(config, ssl_context=context).lenient())


def sign(entra, key=None, kid=None, **overrides) -> str:
    server, state, _ = entra
    now = int(time.time())
    claims = {"aud": "https://dynamicsessions.io", "iss": f"{server.url}/{TENANT}/v2.0", "tid": TENANT,
              "oid": state.signer.object_id, "iat": now, "nbf": now, "exp": now + 600, "roles": ["Sessions.Execute"]}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key or state.signer.key, algorithm="RS256", headers={"kid": kid or state.signer.kid})


def test_entra_token_of_an_allowed_object_id_runs_in_its_own_session(manager, entra):
    oid = entra[1].signer.object_id
    app = entra_app(manager, entra, allowed_object_ids=frozenset({oid}))
    response = call(app, "POST", "/code/execute", token=sign(entra), params=q(), json=execute_body("1"))
    assert response.status_code == 200, response.text
    assert manager.calls == [("run", (f"entra:{TENANT}/{oid}", "s-1"), "1")]
    call(app, "POST", "/code/execute", params=q(), json=execute_body("2"))  # the DevUI token still works
    assert manager.calls[-1] == ("run", ("token", "s-1"), "2")  # same identifier, another session


def test_entra_v1_issuer_and_role_allow_list(manager, entra):
    app = entra_app(manager, entra, allowed_roles=frozenset({"Sessions.Execute"}))
    token = sign(entra, iss=f"https://sts.windows.net/{TENANT}/")
    assert call(app, "POST", "/code/execute", token=token, params=q(), json=execute_body("1")).status_code == 200


@pytest.mark.parametrize("why, make", [
    ("another key, same kid", lambda e: sign(e, key=rsa.generate_private_key(65537, 2048))),
    ("unknown kid", lambda e: sign(e, key=rsa.generate_private_key(65537, 2048), kid="not-published")),
    ("expired", lambda e: sign(e, exp=int(time.time()) - 300, iat=int(time.time()) - 900, nbf=int(time.time()) - 900)),
    ("not yet valid", lambda e: sign(e, nbf=int(time.time()) + 600)),
    ("wrong audience", lambda e: sign(e, aud="https://cognitiveservices.azure.com")),
    ("foreign tenant issuer", lambda e: sign(e, iss="https://sts.windows.net/00000000-0000-4000-8000-000000000000/")),
    ("foreign tid", lambda e: sign(e, tid="00000000-0000-4000-8000-000000000000")),
    ("no oid", lambda e: sign(e, oid=None)),
    ("HS256 with the public key", lambda e: jwt.encode({"aud": "https://dynamicsessions.io"}, "k" * 32, algorithm="HS256")),
    ("not a JWT", lambda e: "opaque-token"),
    ("alg none", lambda e: jwt.encode({"aud": "https://dynamicsessions.io", "tid": TENANT}, None, algorithm="none")),
])
def test_bad_entra_tokens_are_401_and_run_nothing(manager, entra, why, make):
    app = entra_app(manager, entra, allowed_object_ids=frozenset({"*"}))
    response = call(app, "POST", "/code/execute", token=make(entra), params=q(), json=execute_body("1"))
    assert response.status_code == 401, (why, response.text)
    assert response.json()["error"]["code"] == "Unauthorized" and response.json()["error"]["message"]
    assert manager.calls == []


def test_valid_token_outside_the_allow_list_is_403(manager, entra):
    app = entra_app(manager, entra, allowed_object_ids=frozenset({"11111111-1111-4111-8111-111111111111"}),
                    allowed_roles=frozenset({"Other.Role"}))
    response = call(app, "POST", "/code/execute", token=sign(entra), params=q(), json=execute_body("1"))
    assert response.status_code == 403 and manager.calls == []


def test_keys_are_fetched_once_and_unknown_kids_refresh_at_most_once_a_minute(manager, entra):
    server, state, _ = entra
    app = entra_app(manager, entra, allowed_object_ids=frozenset({"*"}))
    before = len([s for s in state.seen if "GET" in s])
    for _ in range(3):
        assert call(app, "POST", "/code/execute", token=sign(entra), params=q(), json=execute_body("1")).status_code == 200
    for n in range(5):
        call(app, "POST", "/code/execute", token=sign(entra, kid=f"made-up-{n}"), params=q(), json=execute_body("1"))
    fetches = [s["GET"] for s in state.seen if "GET" in s][before:]
    assert fetches.count(f"/{TENANT}/v2.0/.well-known/openid-configuration") == 1
    assert fetches.count(f"/{TENANT}/discovery/v2.0/keys") <= 2, fetches


def test_lenient_form_for_the_shared_guard_returns_a_caller_or_none(entra):
    server, state, context = entra
    verifier = EntraVerifier(EntraSettings(TENANT, authority=server.url, allowed_object_ids=frozenset({"*"})),
                             ssl_context=context)
    lenient = verifier.lenient()
    caller = asyncio.run(lenient(sign(entra)))
    assert caller.id == f"entra:{TENANT}/{state.signer.object_id}" and caller.kind == "entra"
    assert caller.roles == ("Sessions.Execute",)
    assert asyncio.run(lenient(sign(entra, exp=int(time.time()) - 3600, iat=1, nbf=1))) is None
    assert asyncio.run(lenient("devui-token")) is None


def test_unicode_and_space_names_round_trip(manager):
    app = build_aca_app(manager, settings())
    for name in ("données été.csv", "图表 (1).png", "a&b=c;#%^.txt"):
        up = call(app, "POST", "/files/upload", params=q(), **multipart(f"/mnt/data/{name}", name.encode()))
        assert up.status_code == 200 and up.json()["value"][0]["properties"]["filename"] == name, up.text
        from urllib.parse import quote
        down = call(app, "GET", f"/files/content/{quote(name)}", params=q())
        assert down.status_code == 200 and down.content == name.encode(), name
