"""What the lean `/v1/responses` path keeps, read back the way the OpenAI API serves it, so an API client can use
the parts of the Responses and Conversations APIs that read stored state:

- `GET /v1/responses/{id}`: the response object as the client got it (for a stream, its final response event's);
- `GET /v1/responses/{id}/input_items`: the items that request sent;
- `DELETE /v1/responses/{id}`: it can no longer be retrieved or continued from (`previous_response_id`);
- `GET /v1/conversations/{id}/items` (and `/items/{item_id}`): the items of a conversation the lean path keeps (an
  API client's `conversation`), every turn's input then output, in order;
- `GET /v1/conversations/{id}`: such a conversation, when DevUI's page never created it.

Everything else, and any conversation the lean path does not keep (DevUI's page's own), goes on to DevUI. The store
is caller-scoped: another caller's ids are 404, as are responses sent with `store: false`, deleted, or dropped with
the oldest turns. Lists page the OpenAI way: `limit` (1 to 100, default 20), `order` (`asc` or `desc`, default
`desc`), `after` (an item id). An item without an id of its own (a string input, a function call as the hosting
helpers render it) gets one derived from its response's id and its place, the same on every read.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import identity
from .errors import held_answer, json_bytes, send_error, send_json
from .history import ConversationStore, Exchange, Item

_RESPONSE = re.compile(r"^/v1/responses/([^/]+)(/input_items)?$")
_CONVERSATION = re.compile(r"^/v1/conversations/([^/]+)(/items(?:/([^/]+))?)?$")
MAX_LIMIT = 100


class BadQuery(ValueError):
    pass


class StoredResponses:
    """Wraps DevUI's app: the paths above, when the lean path's store holds what they name."""

    def __init__(self, app: ASGIApp, store: ConversationStore):
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if scope["type"] != "http" or method not in ("GET", "DELETE"):
            return await self.app(scope, receive, send)
        owner = (scope.get(identity.SCOPE_KEY) or identity.LOCAL).id
        try:
            if match := _RESPONSE.match(scope["path"]):
                return await self._response(send, owner, method, match.group(1), bool(match.group(2)), scope)
            match = _CONVERSATION.match(scope["path"])
            conversation = self.store.conversation(owner, match.group(1)) if match and method == "GET" else None
            if conversation is None:
                return await self.app(scope, receive, send)
            if match.group(2):
                items = [item for turn in conversation.exchanges if turn is not None
                         for item in (*turn.inputs, *turn.outputs)]
                if match.group(3) is None:
                    return await send_json(send, 200, page(items, scope))
                item = next((item for item_id, item in items if item_id == match.group(3)), None)
                if item is None:
                    return await send_error(send, 404, f"no item {match.group(3)!r} in conversation "
                                            f"{conversation.id!r}", "item_not_found")
                return await send_json(send, 200, item)
            await self._conversation(scope, receive, send, conversation)
        except BadQuery as error:
            await send_error(send, 400, str(error), "invalid_query")

    async def _response(self, send: Send, owner: str, method: str, response_id: str, inputs: bool,
                        scope: Scope) -> None:
        if method == "DELETE" and inputs:
            return await send_error(send, 405, "a response's input items cannot be deleted", "method_not_allowed")
        kept = self.store.exchange(owner, response_id)
        if kept is None:
            return await send_error(send, 404, f"response {response_id!r} not found (unknown, not stored, deleted, "
                                    "or its conversation was evicted)", "response_not_found")
        if method == "DELETE":
            self.store.delete_response(owner, response_id)
            await send_json(send, 200, json_bytes({"id": response_id, "object": "response.deleted", "deleted": True}))
        elif inputs:
            await send_json(send, 200, page(list(kept.inputs), scope))
        elif kept.response:
            await send_json(send, 200, kept.response)
        else:  # a stream whose final event never came: its turn is kept, but there is no whole response to return
            await send_error(send, 404, f"response {response_id!r} has no stored body: its stream ended before its "
                             "final event", "response_not_found")

    async def _conversation(self, scope: Scope, receive: Receive, send: Send, conversation) -> None:
        """DevUI's record of it when its page created it (with its metadata), else the lean path's own."""
        status, held = await held_answer(self.app, scope, receive)
        if status not in (0, 404):
            for message in held:
                await send(message)
            return
        await send_json(send, 200, json_bytes({"id": conversation.id, "object": "conversation",
                                           "created_at": conversation.created_at, "metadata": {}}))


def render(response_id: str, input_value: Any, response: dict | None, body: bytes | None = None) -> Exchange:
    """A turn as the client saw it, rendered for reading back: the request's `input` as items (a string is one
    user message; a message's string content one text part, `input_text`, or `output_text` for the assistant's, as
    the OpenAI API lists them), the response's output items, and the response (None: a stream that never ended;
    `body`: the response as already sent, to keep instead of rendering it again)."""
    if isinstance(input_value, str):
        input_value = [{"type": "message", "role": "user", "content": input_value}]
    inputs = []
    for item in input_value if isinstance(input_value, list) else []:
        if not isinstance(item, dict):
            continue
        item = dict(item)
        if "type" not in item and "role" in item:
            item["type"] = "message"
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        inputs.append(item)
    outputs = [item for item in (response or {}).get("output") or [] if isinstance(item, dict)]
    return Exchange(response_id, _rendered(inputs, response_id, "in"), _rendered(outputs, response_id, "out"),
                    body if body is not None else json_bytes(response) if response is not None else b"")


def _rendered(items: list[dict], response_id: str, side: str) -> tuple[Item, ...]:
    """(id, JSON) of each item; one without an id of its own gets one from its response's id and its place."""
    stem = response_id.removeprefix("resp_")
    rendered = []
    for n, item in enumerate(items):
        if not item.get("id"):
            item = dict(item, id=f"item_{stem}_{side}{n}")
        rendered.append((item["id"], json_bytes(item)))
    return tuple(rendered)


def page(items: list[Item], scope: Scope) -> bytes:
    """One page of `items` ((id, JSON), oldest first) as an OpenAI list, from the query's `limit`, `order` and
    `after`; the items' JSON is copied, not parsed."""
    query = {key: values[-1] for key, values in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise BadQuery(f"'limit' must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadQuery("'order' must be 'asc' or 'desc'")
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if "after" in query:
        start = next((n + 1 for n, (item_id, _) in enumerate(ordered) if item_id == query["after"]), -1)
        if start < 0:
            raise BadQuery(f"'after': no item {query['after']!r} in this list")
    chunk = ordered[start:start + limit]
    return listing(chunk, start + limit < len(ordered))


def listing(items: list[Item], has_more: bool = False) -> bytes:
    """`items` ((id, JSON)) as an OpenAI list, their JSON copied."""
    ends = json_bytes({"first_id": items[0][0] if items else None, "last_id": items[-1][0] if items else None,
                       "has_more": has_more})
    return b'{"object":"list","data":[' + b",".join(item for _, item in items) + b"]," + ends[1:]
