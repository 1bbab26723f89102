"""A run stops when its client goes away (`stopping.py`): at once while the model writes; after the call while the
sandbox runs one, its result kept in the conversation and no model call after it. Driven through the whole app in
this process, the client's disconnect given as the ASGI server gives it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from agent_framework import ChatResponse, ChatResponseUpdate, Content, Message
from agent_framework._types import ResponseStream

from inprocess import sse_events
from local_code_interpreter import offline, server
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load
from local_code_interpreter.stopping import Stop


class Client:
    """One POST /v1/responses whose client can leave mid-way (`leave`), as uvicorn tells an app: `receive` returns
    `http.disconnect`. What the app sends after that is kept apart (a server would drop it)."""

    def __init__(self, body: dict):
        self.body = json.dumps(body).encode()
        self.left = asyncio.Event()
        self.before: list[bytes] = []
        self.after: list[bytes] = []
        self.on_event = lambda event: None
        self._read = False

    def leave(self) -> None:
        self.left.set()

    async def receive(self):
        if not self._read:
            self._read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        body = message.get("body", b"")
        (self.after if self.left.is_set() else self.before).append(body)
        for event in sse_events(body.decode()) if body.startswith(b"event:") else ():
            self.on_event(event)

    async def post(self, app) -> None:
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/responses",
                 "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8090),
                 "headers": [(b"host", b"127.0.0.1:8090"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(self.body)).encode())]}
        await asyncio.wait_for(app(scope, self.receive, self.send), 10)

    def response_id(self) -> str:
        """From what the app sent, before the client left or after (a plain response is all sent after)."""
        sent = b"".join(self.before + self.after).decode()
        if sent.startswith("event:"):
            return sse_events(sent)[0]["response"]["id"]
        return json.loads(sent)["id"]


async def _app(gate: asyncio.Event):
    """The app with sessions on the monty back end; each cell waits for `gate` before it runs (`ran`: which did)."""
    settings = load({"sandbox": "monty"}, environ={})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
    await sandbox.start()
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    ran: list[str] = []
    run_cell = sessions.run

    async def gated(key, code):
        await asyncio.wait_for(gate.wait(), 10)
        ran.append(code)
        return await run_cell(key, code)

    sessions.run = gated
    return server.build_app(settings, sandbox, sessions=sessions), sandbox, ran


async def _stored(app, response_id: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
        return await client.get(f"/v1/responses/{response_id}")


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_a_client_that_leaves_while_the_cell_runs_keeps_the_call_and_no_model_call_follows(stream):
    """The cell finishes (its session and what it did stay), the response keeps the call and its output, and the
    model is not asked again: the embedded model's answer after a call is a message, which is not there. The kept
    response says the run did not finish (`cancelled`), and can still be continued."""

    async def run():
        gate = asyncio.Event()
        app, sandbox, ran = await _app(gate)
        try:
            client = Client({"input": "x = 6 * 7\nprint(x)", "stream": stream})

            def on_event(event):
                if event["type"] == "response.code_interpreter_call.interpreting":
                    client.leave()
                    asyncio.get_running_loop().call_later(0.2, gate.set)  # the cell runs on after the client left

            client.on_event = on_event
            if not stream:  # a plain response says nothing until it is done: leave once the cell is running
                asyncio.get_running_loop().call_later(0.2, client.leave)
                asyncio.get_running_loop().call_later(0.4, gate.set)
            await client.post(app)
            stored = await _stored(app, client.response_id())
            # the same conversation's interpreter still has the cell's state
            again = Client({"input": "print(x + 1)", "previous_response_id": stored.json()["id"]})
            gate.set()
            await again.post(app)
            return ran, stored, json.loads(b"".join(again.before))
        finally:
            await sandbox.close()

    ran, stored, again = asyncio.run(run())
    assert ran == ["x = 6 * 7\nprint(x)", "print(x + 1)"]
    assert stored.status_code == 200, stored.text
    output = stored.json()["output"]
    assert [item["type"] for item in output] == ["code_interpreter_call"], output
    assert "42" in output[0]["outputs"][0]["logs"]
    assert stored.json()["status"] == "cancelled"
    assert "43" in json.dumps(again["output"])
    assert again["status"] == "completed"
    assert any(item["type"] == "message" for item in again["output"])  # a run nobody left does ask the model


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_a_client_that_leaves_while_the_model_writes_cancels_the_run_at_once(stream, monkeypatch):
    """The model call is cancelled (no more tokens), nothing runs in the sandbox, nothing is kept: the conversation
    is as it was before the request."""
    cancelled: list[bool] = []

    def writing(self, *, messages, stream, options, **kwargs):
        async def forever():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return ChatResponse(messages=[Message(role="assistant", contents=[Content.from_text("late")])])

        if not stream:
            return forever()

        async def updates():
            await forever()
            yield ChatResponseUpdate(role="assistant", contents=[Content.from_text("late")])

        return ResponseStream(updates(), finalizer=ChatResponse.from_updates)

    monkeypatch.setattr(offline._EmbeddedClient, "_inner_get_response", writing)

    async def run():
        gate = asyncio.Event()
        gate.set()
        app, sandbox, ran = await _app(gate)
        try:
            client = Client({"input": "print(1)", "stream": stream, "conversation": "conv_left"})
            asyncio.get_running_loop().call_later(0.2, client.leave)
            started = asyncio.get_running_loop().time()
            await client.post(app)
            took = asyncio.get_running_loop().time() - started
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as http:
                items = await http.get("/v1/conversations/conv_left/items")
            return ran, took, items, client
        finally:
            await sandbox.close()

    ran, took, items, client = asyncio.run(run())
    assert cancelled == [True] and ran == [] and took < 2, (cancelled, ran, took)
    assert items.status_code == 200 and items.json()["data"] == [], items.text
    assert b"".join(client.after) == b""  # nothing more was sent once it left


def test_what_a_run_does_after_its_whole_response_is_not_stopped():
    """uvicorn reports a whole response to `receive` as a disconnect. A streamed run keeps its response after the
    last event went out; that must not be taken for a client that left."""
    kept: list[str] = []

    async def run():
        complete = asyncio.Event()

        async def receive():
            await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if not message.get("more_body"):
                complete.set()

        async def serve(send):
            await send({"type": "http.response.body", "body": b"event: response.completed\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await asyncio.sleep(0.05)  # the receive above has answered meanwhile
            kept.append("kept")
            return "done"

        return await Stop().run(serve, receive, send)

    assert asyncio.run(run()) == "done" and kept == ["kept"]
