"""Errors in the OpenAI API's shape (`{"error": {"message", "type", "code"}}`), so OpenAI clients show the message,
and the sandbox's errors mapped to their HTTP status; and the small ASGI helpers the routes share."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..sandbox import InvalidFileName, QuotaExceeded, SandboxBusy, SandboxUnavailable

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_value(status: int, message: str, code: str) -> dict:
    """`{"error": {...}}` for an answer of `status`."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def error_body(status: int, message: str, code: str) -> bytes:
    return json.dumps(error_value(status, message, code)).encode()


async def send_error(send: Send, status: int, message: str, code: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json(send, status, error_body(status, message, code), headers)


def json_bytes(value: Any) -> bytes:
    """`value` as compact JSON."""
    return json.dumps(value, separators=(",", ":")).encode()


async def held_answer(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, list[Message]]:
    """What `app` answers, kept instead of sent (a small JSON answer the caller decides about): its status (0 if it
    sent none) and its messages, to send as they are or not at all."""
    held: list[Message] = []

    async def hold(message: Message) -> None:
        held.append(message)

    await app(scope, receive, hold)
    start = next((m for m in held if m["type"] == "http.response.start"), None)
    return (start["status"] if start is not None else 0), held


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON response, written straight to ASGI (the guard answers before any app runs)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes:
    """The request header `name` (lower case), or b""."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


def replayed(body: bytes, receive: Receive | None) -> Receive:
    """A receive that gives `body` (read already) once, then the client's own (its disconnect); with no `receive`
    (the client is watched elsewhere: `stopping.Stop`), nothing more."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            if receive is None:
                await asyncio.Event().wait()
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def status_for(error: BaseException) -> tuple[int, str] | None:
    """The HTTP status and code for a sandbox error, or None for errors that are the server's own fault."""
    if isinstance(error, SandboxBusy):
        return 429, "sandbox_busy"
    if isinstance(error, InvalidFileName):
        return 400, "invalid_file_name"
    if isinstance(error, QuotaExceeded):
        return 413, "quota_exceeded"
    if isinstance(error, FileNotFoundError):
        return 404, "file_not_found"
    if isinstance(error, SandboxUnavailable):
        return 503, "sandbox_unavailable"
    return None
