"""`POST /v1/responses` for API clients: the lean path, built on `agent-framework-hosting-responses`.

The request body is parsed here once (strict JSON: no NaN/Infinity, bounded nesting; types checked), turned into
agent run arguments by `messages_from_responses_input` (and the output items a client sends back, by
`input_items.py`), run with `Agent.run` (streaming only when the client asked for it), and rendered by
`responses_from_run` / `responses_from_streaming_run`, the agent's `execute_code` calls as code interpreter calls
(`tool_items.py` swaps the contents; streamed, `tool_stream.py` adds each call's own events). No Responses mapping
is written here.

Which requests go where: a request that names a DevUI entity (`metadata.entity_id`, which the DevUI web page always
sends) or asks for DevUI's OpenAI proxy (`X-Proxy-Backend`) is handed to DevUI unchanged (its body replayed), inside
`in_conversation(<its conversation>, caller)`. Everything else — the official `openai` client and any API
client — is served here. `metadata.entity_id` equal to the agent's name (`local-code-interpreter`) also stays
here.

Conversation continuity: `conversation` (string or `{"id"}`) or `previous_response_id`, kept by `ConversationStore`
(bounded); each run is wrapped in `conversation.in_conversation(<root conversation>, caller)` so the
`execute_code` tool finds the conversation's sandbox session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from agent_framework import AgentSession
from agent_framework_hosting_responses import (
    create_response_id,
    responses_from_run,
    responses_session_id,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import identity
from ..artifacts import said
from ..attachments import inline_files
from ..conversation import in_conversation
from ..stopping import Stop, cut_short
from . import stored
from .bodies import BadRequest, check_metadata, parse_body, read_body
from .client_tools import client_tools, named_container
from .containers import CONTAINER_RULE, is_container_id
from .devui_api import named_conversation
from .errors import header, json_bytes, replayed, send_error, status_for
from .history import ConversationStore, HistoryError
from .input_items import messages_from_input
from .run_options import run_options
from .tool_items import shown
from .tool_stream import ShownRun

log = logging.getLogger(__name__)
_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "instructions": (str,), "stream": (bool,), "store": (bool,), "metadata": (dict,),
    "temperature": (int, float), "top_p": (int, float), "max_output_tokens": (int,),
    "parallel_tool_calls": (bool,), "previous_response_id": (str,), "conversation": (str, dict),
    "user": (str,), "tools": (list,), "tool_choice": (str, dict), "include": (list,), "text": (dict,),
    "reasoning": (dict,), "truncation": (str,), "background": (bool,),
}


def check_request(request: dict) -> None:
    """Types of the fields we read, with the field named in the error."""
    for key, kinds in _TYPES.items():
        value = request.get(key)
        if value is None:
            continue
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            names = " or ".join(dict.fromkeys({str: "a string", bool: "a boolean", dict: "an object",
                                               list: "an array", int: "a number", float: "a number"}[k]
                                              for k in kinds))
            raise BadRequest(f"'{key}' must be {names}", "invalid_type")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"'{key}' must be a finite number", "invalid_type")
    check_metadata(request.get("metadata"))
    if request.get("max_output_tokens") is not None and request["max_output_tokens"] < 1:
        raise BadRequest("'max_output_tokens' must be at least 1", "invalid_value")
    if request.get("background"):
        raise BadRequest("'background' responses are not supported by this server", "unsupported")
    text = request.get("input")
    if text is None or text in ("", []) or (isinstance(text, str) and not text.strip()):
        raise BadRequest("'input' is empty: send the message (for example code to run) as 'input'", "empty_input")


class ResponsesApp:
    """The `/v1/responses` POST handler: lean path for API clients, DevUI's for its web page."""

    def __init__(self, agent, store: ConversationStore, devui: ASGIApp, agent_name: str,
                 devui_entity_id=lambda: None, end_session: Callable[[tuple[str, str]], Awaitable[Any]] | None = None):
        self.agent, self.store, self.devui, self.agent_name = agent, store, devui, agent_name
        self.devui_entity_id = devui_entity_id
        # `store: false` with nothing to continue: its sandbox session (if the code opened one) ends with the
        # response instead of idling until it expires or displaces a conversation somebody will continue.
        self.end_session = end_session
        self._ending: set[asyncio.Task] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        caller = scope.get(identity.SCOPE_KEY) or identity.LOCAL
        try:
            request = parse_body(body)
            metadata = request.get("metadata")
            entity = metadata.get("entity_id") if isinstance(metadata, dict) else None
            if (entity is not None and entity != self.agent_name) or header(scope, b"x-proxy-backend"):
                return await self._to_devui(scope, receive, send, request, body, caller)
            check_request(request)
            await Stop().run(lambda sending: self._serve(request, caller, sending), receive, send)  # stopping.py
        except BadRequest as error:
            await send_error(send, error.status, str(error), error.code)
        except HistoryError as error:
            await send_error(send, error.status, str(error), error.code)

    async def _serve(self, request: dict, caller: identity.Caller, send: Send) -> None:
        try:
            session_id, is_conversation = responses_session_id(request)
            continued = (session_id if is_conversation else None, None if is_conversation else session_id)  # conv, prev
            messages = messages_from_input(inline_files(request["input"]),  # attachments.py, input_items.py
                                           lambda: self.store.pending_calls(caller.id, *continued))
            tools = client_tools(request.get("tools"))
            named = named_container(request.get("tools"))  # where the code runs, when the client says
            options = run_options(request, tools)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        if is_conversation and not is_container_id(session_id):  # its sandbox session is keyed by it
            raise BadRequest(f"'conversation' must be a conversation id: {CONTAINER_RULE}", "invalid_value")
        self.store.check_input(messages)
        keep = request.get("store", True)
        continuation = self.store.resolve(caller.id, *continued, keep)
        conversation = continuation.conversation
        shown_conversation = conversation.id if is_conversation else None
        container = named or conversation.root  # the sandbox session's conversation id (its `container_id`)
        response_id = create_response_id()
        history = continuation.history + messages
        # The history travels in the request; the run's own session starts empty and is dropped after it. With a
        # session the framework resolves tool approvals from it instead of re-deriving them by copying the whole
        # history on every model call (measured: 200 kept messages cost 1.5 ms per turn without, 0.8 ms with).
        try:
            if request.get("stream"):
                await self._stream(send, history, options, tools, request, messages, continuation, response_id,
                                   shown_conversation, container, caller, keep)
                return
            try:
                with in_conversation(container, caller):
                    result = await self.agent.run(history, session=AgentSession(), options=options, tools=tools or None)
            except Exception as error:  # noqa: BLE001 - sandbox errors map to their status; the rest is ours
                mapped = _mapped(error)
                if mapped is None:
                    raise
                return await send_error(send, mapped[0], str(error), mapped[1])
        finally:
            if continuation.transient and named is None and self.end_session is not None:
                self._end_later((caller.id, container))  # nobody can name it again: a named one, they can
        payload = responses_from_run(shown(result, container), response_id=response_id,
                                     conversation_id=shown_conversation)
        if cut_short():  # its client left: nobody reads this answer, and the kept one says the run did not finish
            payload["status"] = "cancelled"
        body = json_bytes(payload)
        if keep:
            self.store.record(continuation, response_id, messages + said(result.messages),
                              stored.render(response_id, request["input"], payload, body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _end_later(self, key: tuple[str, str]) -> None:
        """End the session in the background: the reply does not wait for its process to exit."""
        task = asyncio.get_running_loop().create_task(self.end_session(key))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _stream(self, send, history, options, tools, request, messages, continuation, response_id,
                      shown_conversation, container, caller, keep) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        with in_conversation(container, caller):
            stream = self.agent.run(history, stream=True, session=AgentSession(), options=options, tools=tools or None)
            run = ShownRun(stream, response_id=response_id, conversation_id=shown_conversation,  # tool_stream.py
                           container=container)
            last = ""  # the stream's final response event
            async with contextlib.aclosing(run.batches()) as batches:
                async for batch in batches:  # the events ready together, in one write
                    for event in batch:
                        if event.startswith(_WHOLE_RESPONSE_EVENTS):
                            last = event
                    await send({"type": "http.response.body", "body": "".join(batch).encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if keep:
            try:
                final = await stream.get_final_response()
            except Exception:  # noqa: BLE001 - the stream already reported its failure to the client
                return
            response = _response_of(last)
            if response is not None and cut_short():  # as in `_serve`
                response["status"] = "cancelled"
            self.store.record(continuation, response_id, messages + said(final.messages),
                              stored.render(response_id, request["input"], response))

    async def _to_devui(self, scope, receive, send, request: dict, body: bytes, caller: identity.Caller) -> None:
        """DevUI's own path (its web page): the same body, inside the conversation DevUI's request names. A page that
        goes away stops the run as `Stop` does on the lean path; DevUI itself is not told (it would cancel a cell
        mid-way, and the conversation would lose what the cell did)."""
        metadata = request.get("metadata")
        if isinstance(metadata, dict) and metadata.get("entity_id") == self.agent_name:
            entity = self.devui_entity_id()
            if entity:
                request["metadata"] = dict(metadata, entity_id=entity)
                body = json.dumps(request).encode()
        conversation = named_conversation(request)
        replay = replayed(body, None)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        scope = dict(scope, headers=headers)
        with in_conversation(conversation, caller) if conversation else contextlib.nullcontext():
            await Stop().run(lambda sending: self.devui(scope, replay, sending), receive, send)


# The events that end a stream; their data holds the whole response object (`{"type": ..., "response": {...}}`).
_WHOLE_RESPONSE_EVENTS = tuple(f"event: response.{kind}\n" for kind in ("completed", "incomplete", "failed"))


def _response_of(event: str) -> dict | None:
    """The response object in an SSE event of `_WHOLE_RESPONSE_EVENTS` (None for no event)."""
    data = event.partition("\ndata: ")[2]
    return json.loads(data)["response"] if data else None


def _mapped(error: BaseException) -> tuple[int, str] | None:
    seen = 0
    while error is not None and seen < 8:
        mapped = status_for(error)
        if mapped is not None:
            return mapped
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None
