"""The sessions API over the real session engine (SessionManager + the subprocess back end), in process: what
only the engine can show — state, files written by code, figures, a planted symlink, the replica full of busy
sessions — through the same routes and shapes the clients use."""
from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from inprocess import devui_stand_in
from local_code_interpreter.http.aca import build_aca_app
from local_code_interpreter.sandbox import SandboxUnavailable, create_sandbox
from local_code_interpreter.server import Router, guard
from local_code_interpreter.sessions import SessionLimits, SessionManager
from local_code_interpreter.settings import load

V1 = "2024-02-02-preview"


def run(scenario, max_sessions: int = 4):
    """Start the engine, give `scenario(client)` an API client on it, stop everything."""
    async def main():
        settings = load({"timeout": 3}, {"DEVUI_AUTH_TOKEN": "t"})
        sandbox = create_sandbox("subprocess", settings.limits, "python", 4)
        await sandbox.start()
        manager = SessionManager(sandbox, SessionLimits(max_sessions=max_sessions), language="python")
        await manager.start()
        app = guard(settings, Router(devui_stand_in, devui_stand_in, devui_stand_in,
                                     [("/sessions", build_aca_app(manager, settings))]), sessions=True)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1/sessions",
                                         headers={"authorization": "Bearer t"}, timeout=60) as client:
                try:
                    return await scenario(client)
                except SandboxUnavailable as error:
                    pytest.skip(str(error))
        finally:
            await manager.close_all()
            await sandbox.close()
    return asyncio.run(main())



async def execute(client, ident, code):
    response = await client.post("/code/execute", params={"api-version": V1, "identifier": ident},
                                 json={"properties": {"codeInputType": "inline", "executionType": "synchronous",
                                                      "code": code}})
    if response.status_code == 503:
        pytest.skip(response.json()["error"]["message"])
    return response


def test_state_files_and_figures_through_the_api():
    async def scenario(client):
        q = {"api-version": V1, "identifier": "one"}
        assert (await execute(client, "one", "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\n"
                                             "df.to_csv('out.csv', index=False)\nlen(df)")).json()["properties"]["result"] == 3
        listing = (await client.get("/files", params=q)).json()["value"]
        assert [(e["properties"]["filename"], e["properties"]["size"]) for e in listing] == [("out.csv", 8)]
        assert (await client.get("/files/content/out.csv", params=q)).content == b"a\n1\n2\n3\n"
        up = await client.post("/files/upload", params=q, files={"file": ("/mnt/data/in.bin", bytes(range(256)))})
        assert up.status_code == 200, up.text
        props = (await execute(client, "one", "open('in.bin', 'rb').read() == bytes(range(256))")).json()["properties"]
        assert props["result"] is True, props
        image = (await execute(client, "one", "import matplotlib.pyplot as plt\nplt.plot([1, 2], [2, 1])")).json()
        result = image["properties"]["result"]
        assert result["type"] == "image" and result["format"] == "png"
        assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG\r\n\x1a\n")
        assert (await client.delete("/files/out.csv", params=q)).status_code == 200
        assert (await client.get("/files/content/out.csv", params=q)).status_code == 404
    run(scenario)


def test_a_symlink_planted_by_code_is_not_followed_by_downloads():
    async def scenario(client):
        q = {"api-version": V1, "identifier": "links"}
        await execute(client, "links", "import os\nos.symlink('/etc/passwd', 'p')\nos.symlink('/etc', 'd')")
        for path in ("/files/content/p", "/files/content/d/passwd"):
            response = await client.get(path, params=q)
            assert response.status_code in (400, 404), (path, response.status_code)
            assert b"root:" not in response.content
        up = await client.post("/files/upload", params=q, files={"file": ("d/evil", b"x")})
        assert up.status_code in (400, 404), up.text
        assert (await execute(client, "links", "1")).json()["properties"]["result"] == 1  # still serving
    run(scenario)


def test_a_full_replica_of_busy_sessions_answers_429_then_recovers():
    async def scenario(client):
        busy = asyncio.create_task(execute(client, "a", "import time\ntime.sleep(1.5)\n'done'"))
        await asyncio.sleep(0.5)
        refused = await execute(client, "b", "1")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
        assert refused.json()["error"]["code"] == "TooManyRequests" and "busy" in refused.json()["error"]["message"]
        assert (await busy).json()["properties"]["result"] == "done"
        assert (await execute(client, "b", "2")).json()["properties"]["result"] == 2  # a's idle session evicted
        again = (await execute(client, "a", "1")).json()["properties"]
        assert "fresh session" in again["stderr"], again  # a learns its state is gone
    run(scenario, max_sessions=1)
