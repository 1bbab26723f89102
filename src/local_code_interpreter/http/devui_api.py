"""DevUI's own API routes as an API client meets them (`/v1/conversations` of the DevUI page, `/v1/entities`, ...).

- Errors in the OpenAI shape: DevUI (FastAPI) answers a 4xx or 5xx as `{"detail": ...}`, which an OpenAI client
  shows as a raw dict. Each such JSON answer gets `{"error": {"message", "type", "code", "param"}}` too, the message
  taken from `detail` (a validation error's list joined, field by field); `detail` stays, as the DevUI page's
  scripts read it. Anything else passes untouched, unbuffered.
- An entity id DevUI does not serve (`/v1/entities/{id}/...`) is a 404 here: DevUI answers 500 for it.
- A JSON body DevUI is given is parsed first as our own routes parse theirs (`bodies.parse_body`): a body of NaN, or
  with half a surrogate pair, was a plain-text 500 from FastAPI, which fails to write its own validation error
  (`POST /v1/conversations/{id}`, `client.conversations.update`). The DevUI page's requests that our layers
  parsed before handing them on are parsed again: small, and the page's alone.
- A `/v1/responses` input DevUI cannot read is a 400 (`input_error`: DevUI's own reading of it, so what its page
  sends is never refused): DevUI answers it with a 200 whose response failed with a `server_error`.
- A `/v1/responses` naming a conversation DevUI does not hold (`holds`: never created, deleted, or dropped as the
  least recently used of those it keeps, `devui_store.py`) is a 404: DevUI runs it without the conversation's
  history and keeps nothing of it, an answer that forgot the conversation. Not for its OpenAI proxy
  (`X-Proxy-Backend`), whose conversations are OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bodies import BadRequest, check_metadata, parse_body, read_body
from .errors import error_value, header, replayed, send_error

_ENTITIES = "/v1/entities/"
_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 422: "invalid_request", 429: "rate_limited"}
MAX_ERROR_BYTES = 64 * 1024  # a larger error body passes as it is
_WITH_BODY = ("POST", "PUT", "PATCH")


class DevUIApi:
    """Around DevUI's app: `entity_id()` is the one entity it serves (None until it knows); `input_error(input,
    conversation id)` says what is wrong with a `/v1/responses` input for DevUI (None: nothing); `holds(conversation
    id)`, whether DevUI holds that conversation."""

    def __init__(self, app: ASGIApp, entity_id: Callable[[], str | None],
                 input_error: Callable[[Any, str | None], str | None] = lambda value, conversation: None,
                 holds: Callable[[str], bool] = lambda conversation: True):
        self.app, self.entity_id, self.input_error, self.holds = app, entity_id, input_error, holds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith(_ENTITIES):
            wanted = unquote(path[len(_ENTITIES):].split("/", 1)[0])
            served = self.entity_id()
            if served is not None and wanted != served:
                return await send_error(send, 404, f"no entity {wanted!r}: this server's is {served!r}", "not_found")
        if scope.get("method") in _WITH_BODY and _is_json(scope["headers"]):
            body = await read_body(receive)
            if body is None:
                return
            if body.strip():
                try:
                    request = parse_body(body)
                    if isinstance(request, dict):
                        check_metadata(request.get("metadata"))  # kept with the conversation or the response
                    if path == "/v1/responses" and isinstance(request, dict):
                        if not header(scope, b"x-proxy-backend"):
                            self._check_conversation(request)
                        if "input" in request:
                            self._check_input(request)
                except BadRequest as error:
                    return await send_error(send, error.status, str(error), error.code)
            receive = replayed(body, receive)
        held: Message | None = None  # the start of an error answer, sent with its rewritten body
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and _is_json(message.get("headers", [])):
                    held = message
                    return
                return await send(message)
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False) and sum(map(len, chunks)) <= MAX_ERROR_BYTES:
                return
            body = b"".join(chunks)
            start, held = held, None
            if not message.get("more_body", False):
                body = _openai_error(start["status"], body)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            if not message.get("more_body", False):
                headers.append((b"content-length", str(len(body)).encode()))
            await send(dict(start, headers=headers))
            await send({"type": "http.response.body", "body": body, "more_body": message.get("more_body", False)})

        await self.app(scope, receive, sending)

    def _check_conversation(self, request: dict) -> None:
        conversation = named_conversation(request)
        if conversation and not self.holds(conversation):
            raise BadRequest(f"Conversation {conversation} not found: it was deleted, or dropped as the least "
                             "recently used of the conversations this server keeps (LCI_CONVERSATIONS_MAX of them, "
                             "LCI_CONVERSATIONS_MAX_BYTES in all); start a new one", "not_found", 404)

    def _check_input(self, request: dict) -> None:
        problem = self.input_error(request["input"], named_conversation(request))
        if problem is not None:
            raise BadRequest(f"'input' cannot be read: {problem}", "invalid_input")


def named_conversation(request: dict) -> str | None:
    """The conversation id a `/v1/responses` request names (`conversation`, a string or `{"id"}`), if any."""
    conversation = request.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    return conversation if isinstance(conversation, str) else None


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.split(b";")[0].strip().lower() == b"application/json"
               for k, v in headers)


def _openai_error(status: int, body: bytes) -> bytes:
    """`body` with an OpenAI `error` beside FastAPI's `detail`; unchanged when it has no `detail` or has an
    `error` already."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if not isinstance(value, dict) or "detail" not in value or "error" in value:
        return body
    error = error_value(status, _message(value["detail"]), _CODES.get(status, "server_error"))
    return json.dumps({**error, "detail": value["detail"]}).encode()


def _message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and all(isinstance(e, dict) for e in detail):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}".lstrip(": ")
                         for e in detail)
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return detail["message"]
    return json.dumps(detail)
