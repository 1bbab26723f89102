"""The whole application in this process (guard, router, lean path, DevUI), driven through ASGI by httpx."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx

from local_code_interpreter import server
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load


@asynccontextmanager
async def app_client(env: dict[str, str] | None = None, sandbox=None):
    """(httpx.AsyncClient, settings, sandbox) over the composed app; the monty back end (in-process, fast) unless
    a sandbox is given."""
    settings = load({"sandbox": "monty"}, environ=env or {})
    sandbox = sandbox or create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
    await sandbox.start()
    try:
        async with _client(server.build_app(settings, sandbox)) as client:
            yield client, settings, sandbox
    finally:
        await sandbox.close()


@asynccontextmanager
async def app_with_sessions():
    """(httpx.AsyncClient, SessionManager) over the composed app with sandbox sessions (as the server runs it: the
    file routes, the Containers API and the sessions API mounted), on the monty back end."""
    settings = load({"sandbox": "monty"}, environ={})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
    await sandbox.start()
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    try:
        async with _client(server.build_app(settings, sandbox, sessions=sessions)) as client:
            yield client, sessions
    finally:
        await sessions.close_all()
        await sandbox.close()


def _client(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090", timeout=30)


async def devui_entity(client: httpx.AsyncClient) -> str:
    entities = (await client.get("/v1/entities")).json()["entities"]
    return entities[0]["id"]


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line[6:] != "[DONE]"]


async def devui_stand_in(scope, receive, send):
    """Where the router sends what no other route takes (DevUI in the server): a 418 that says so."""
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b"devui"})
