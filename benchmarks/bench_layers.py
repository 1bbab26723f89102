"""Where a new conversation's server CPU goes, layer by layer, in one process: what each layer of the serving path
adds to the one below it.

    .venv/bin/python benchmarks/bench_layers.py [--requests 2000] [--rounds 2] [--backend subprocess]

In this process, on uvloop, with the server's collector settings (`server.settle_collector`), the app the server
serves (`server.build_app` with sessions), and one new conversation per request (`print(i*3)`, the issue's request;
the replica full, so each also ends the least recently used session). Each layer's loop runs alone, after 300 to
warm up, and this thread's CPU is read around it (the event loop's: the refills and evictions a request leaves
behind run in it too):
- engine: `SessionManager.run` (a new sandbox session: a spare child taken and replaced, its first cell, the
  eviction);
- agent: `Agent.run` of the server's agent (the embedded default client, the `execute_code` tool, our
  middleware) inside a new conversation: the engine plus Agent Framework;
- app: the whole ASGI app for `POST /v1/responses` (guard, router, the lean path: parsing, the conversation store,
  the agent run, rendering, JSON), without an HTTP server or a socket; and of that, the rendering by
  agent-framework-hosting-responses (`responses_from_run`, timed in place: rendering one result again and again
  alone takes a fifth of that, its code and data staying in the CPU's caches).
The real server adds uvicorn, its parser and the sockets: `bench_kinds.py` prints that process's CPU per request
of the same kind. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

import uvloop
from agent_framework import AgentSession, Message
from agent_framework_hosting_responses import responses_from_run

from local_code_interpreter import server
from local_code_interpreter.http import responses
from local_code_interpreter.agent import build_agent
from local_code_interpreter.artifacts import ShowArtifacts
from local_code_interpreter.attachments import SaveAttachments
from local_code_interpreter.conversation import in_conversation
from local_code_interpreter.offline import EmbeddedChatClient
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load

LAYERS = ("engine", "agent", "app")


async def measure(backend: str, requests: int, rounds: int) -> None:
    settings = load({"sandbox": backend}, environ={})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
    await sandbox.start()
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    app = server.build_app(settings, sandbox, sessions=sessions)
    agent = build_agent(EmbeddedChatClient(), sandbox, sessions,  # as build_app wires it
                        middleware=[SaveAttachments(sessions), ShowArtifacts(None)])
    server.settle_collector()
    rendering = [0.0]

    def timed_render(*args, **kwargs):
        started = time.thread_time()
        try:
            return responses_from_run(*args, **kwargs)
        finally:
            rendering[0] += time.thread_time() - started

    responses.responses_from_run = timed_render  # the lean path's own reference to the helper

    async def engine(i: int) -> None:
        result = await sessions.run(("local", f"conv_{uuid.uuid4().hex}"), f"print({i}*3)")
        assert result.stdout.strip() == str(i * 3), result

    async def agent_run(i: int) -> None:
        with in_conversation(f"conv_{uuid.uuid4().hex}"):
            result = await agent.run([Message(role="user", contents=[f"print({i}*3)"])], session=AgentSession())
        assert str(i * 3) in result.messages[-1].text, result.messages[-1].text

    async def whole_app(i: int) -> None:
        body = json.dumps({"input": f"print({i}*3)"}).encode()
        sent, received = [], []

        async def receive():
            if received:  # after the body, as a server does: the next message is the client's disconnect
                await asyncio.Event().wait()
            received.append(True)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                   "scheme": "http", "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"",
                   "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8090),
                   "headers": [(b"host", b"127.0.0.1:8090"), (b"content-type", b"application/json"),
                               (b"content-length", str(len(body)).encode())]}, receive, send)
        assert sent[0]["status"] == 200, sent

    steps = {"engine": engine, "agent": agent_run, "app": whole_app}
    print(f"CPU of the event loop's thread per new conversation (ms), {backend} back end, {requests} each")
    print(f"{'round':>5} " + " ".join(f"{layer:>8}" for layer in LAYERS) + "   render")
    try:
        for round_ in range(1, rounds + 1):
            figures = []
            for layer in LAYERS:
                step = steps[layer]
                for i in range(300):
                    await step(i)
                await asyncio.sleep(0.1)  # what the warm-up left behind (a refill, an eviction) is not counted
                rendering[0] = 0.0
                started = time.thread_time()
                for i in range(requests):
                    await step(i)
                await asyncio.sleep(0.1)  # ...but what these left behind is
                figures.append((time.thread_time() - started) / requests * 1000)
            print(f"{round_:>5} " + " ".join(f"{figure:8.3f}" for figure in figures)
                  + f" {rendering[0] / requests * 1000:8.3f}", flush=True)
    finally:
        await sessions.close_all()
        await sandbox.close()
    print("agent - engine: Agent Framework, our tool and middleware; app - agent - render: the lean path's own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", default="subprocess")
    args = parser.parse_args()
    uvloop.run(measure(args.backend, args.requests, args.rounds))
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
