"""The write side of the Conversations API for API clients: items a client puts into a conversation are kept where
the lean `/v1/responses` path reads its history (`ConversationStore`), so the next response in that conversation
sees them and `GET /v1/conversations/{id}/items` lists them, in order, with the turns.

- `POST /v1/conversations` (`client.conversations.create(items=..., metadata=...)`): DevUI creates the
  conversation (its id, `created_at`, `metadata`; retrieve and update stay DevUI's), and the lean path keeps it from
  then on, with the `items` (DevUI's own store would drop them). The DevUI page's own conversations (its requests
  name `agent_id` or `entity_id` in `metadata`, or ask for its OpenAI proxy) are left to DevUI as they were.
- `POST /v1/conversations/{id}/items` (`client.conversations.items.create`) on a conversation the lean path keeps:
  the items are appended as a turn of their own and answered as the OpenAI API does (the list of the items added,
  each with its id). On any other conversation (the page's, or one nobody created), DevUI answers.

- `DELETE /v1/conversations/{id}/items/{item_id}` (`client.conversations.items.delete`, the OpenAI Agents SDK's
  `pop_item`) on a conversation the lean path keeps: the item leaves its turn, and the turn the model is sent is
  rebuilt from the items left in it (`ConversationStore.delete_item`); answered with the conversation, as the OpenAI
  API does. An item whose removal would leave the history unsound (a call whose output is still there) is a 400
  saying which to delete first; an unknown item is a 404. On any other conversation, DevUI answers.

Items are parsed as a `/v1/responses` `input` is (`input_items.py`, the hosting helpers): messages, and the output
items of earlier responses. A bad item is a 400 naming it and nothing is added; at most `MAX_ITEMS` per request,
as the OpenAI API allows; each item within `LCI_CONVERSATION_ITEM_MAX_BYTES`, and the conversation within the store's
bounds like any turn.
"""

from __future__ import annotations

import json
import re
import uuid

from agent_framework import Message
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import identity
from ..attachments import inline_files
from . import stored
from .bodies import BadRequest, check_metadata, parse_body, read_body
from .errors import header, held_answer, json_bytes, replayed, send_error, send_json
from .history import ConversationStore, Exchange, HistoryError, Item
from .input_items import messages_from_input

_ITEMS = re.compile(r"^/v1/conversations/([^/]+)/items$")
_ITEM = re.compile(r"^/v1/conversations/([^/]+)/items/([^/]+)$")
MAX_ITEMS = 20
_PAGE_KEYS = ("agent_id", "entity_id")  # what the DevUI page's conversations name in their metadata


class ConversationItems:
    """Wraps DevUI's app: the two POSTs and the DELETE above, for API clients."""

    def __init__(self, app: ASGIApp, store: ConversationStore):
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        item = _ITEM.match(scope["path"]) if method == "DELETE" else None
        if item is None and method != "POST":
            return await self.app(scope, receive, send)
        owner = (scope.get(identity.SCOPE_KEY) or identity.LOCAL).id
        if item is not None:
            return await self._delete(scope, receive, send, owner, item.group(1), item.group(2))
        path = scope["path"]
        match = _ITEMS.match(path)
        if path == "/v1/conversations" and not header(scope, b"x-proxy-backend"):
            return await self._create(scope, receive, send, owner)
        if match is None:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return
        try:
            items = parse_body(body).get("items")
            messages = self._parse(items)  # checked on every path: DevUI answers a malformed item with a 500
        except (BadRequest, HistoryError) as error:
            return await send_error(send, error.status, str(error), error.code)
        if self.store.conversation(owner, match.group(1)) is None:
            return await self.app(scope, replayed(body, receive), send)
        exchange = _exchange(items)
        self.store.record(self.store.resolve(owner, match.group(1), None), None, messages, exchange)
        await send_json(send, 200, stored.listing(list(exchange.inputs)))

    async def _create(self, scope: Scope, receive: Receive, send: Send, owner: str) -> None:
        body = await read_body(receive)
        if body is None:
            return
        try:
            request = parse_body(body)
        except BadRequest as error:
            return await send_error(send, error.status, str(error), error.code)
        metadata = request.get("metadata")
        if isinstance(metadata, dict) and any(key in metadata for key in _PAGE_KEYS):
            return await self.app(scope, replayed(body, receive), send)  # the DevUI page's: DevUI's alone
        items = request.get("items")
        try:
            check_metadata(metadata)
            messages = self._parse(items) if items not in (None, []) else None  # `items=[]`: none, as in OpenAI's
        except (BadRequest, HistoryError) as error:
            return await send_error(send, error.status, str(error), error.code)
        status, held = await held_answer(self.app, scope, replayed(body, receive))
        if status == 200:
            created = json.loads(b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body"))
            continuation = self.store.resolve(owner, created["id"], None)
            if messages:
                self.store.record(continuation, None, messages, _exchange(items))
        for message in held:
            await send(message)

    async def _delete(self, scope: Scope, receive: Receive, send: Send, owner: str, conversation_id: str,
                      item_id: str) -> None:
        try:
            deleted = self.store.delete_item(owner, conversation_id, item_id, _rebuilt)
        except HistoryError as error:
            return await send_error(send, error.status, str(error), error.code)
        if deleted is None:  # not the lean path's: DevUI's (the page's), or nobody's
            return await self.app(scope, receive, send)
        if not deleted:
            return await send_error(send, 404, f"no item {item_id!r} in conversation {conversation_id!r}",
                                    "item_not_found")
        created = self.store.conversation(owner, conversation_id).created_at
        await send_json(send, 200, json_bytes({"id": conversation_id, "object": "conversation", "metadata": {},
                                               "created_at": created}))

    def _parse(self, items) -> list[Message]:
        if not isinstance(items, list) or not items:
            raise BadRequest("'items' must be a non-empty array of conversation items", "invalid_type")
        if len(items) > MAX_ITEMS:
            raise BadRequest(f"at most {MAX_ITEMS} items can be added at a time ({len(items)} sent)", "too_many_items")
        try:
            messages = messages_from_input(inline_files(items))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        self.store.check_input(messages)
        return messages


def _rebuilt(items: list[dict], waiting: set[str]) -> list[Message]:
    """A kept turn's messages from the items left in it (as a request's `input`; its calls may stay open)."""
    return messages_from_input(inline_files(items), lambda: waiting, open_calls=True)


def _exchange(items: list) -> Exchange:
    """The items as they will be listed: ids of their own, else `item_<hex>_in<n>` (one hex per request)."""
    return stored.render(uuid.uuid4().hex, items, None)

