"""One request straight into an ASGI app, without a client in between (no normalisation of the path, any caller)."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from local_code_interpreter.identity import SCOPE_KEY, Caller


def call(app, path: str, caller: Caller | None = None, method: str = "GET", headers=()):
    """(status, headers, body) of one bodiless request, the path exactly as given; `caller` as the guard would set."""
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    if caller is not None:
        scope[SCOPE_KEY] = caller
    sent = []
    received = []

    async def receive():
        if received:  # as a server does: after the (empty) body, the next message is the client's disconnect
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])
