"""DevUI's in-memory conversation store as the service runs it. Bounded as the lean path's store is (`Bounds`, the
same settings): at most `max_conversations` (the least recently used, made or run, goes when the page makes one
more); at most `max_items` messages kept per conversation (its oldest whole turns dropped; as many added through
`POST .../items`, the oldest dropped); at most `max_traces` trace events (the oldest dropped); and `max_bytes` for
all these and the lean path's conversations together (each store evicts its own, here the least recently used
conversation first; one that alone holds more loses its oldest turns), applied as each page run ends
(`BoundsRuns`). DevUI's own store keeps every conversation, every message of it and every trace event for the life
of the process: a page could grow the server's memory at will.

And it lists a conversation's turns. DevUI lists a conversation's items from the messages added through
`POST /v1/conversations/{id}/items` alone, while its runs keep their turns in the conversation's `AgentSession` (the
agent's `InMemoryHistoryProvider`), so the page, reloaded or switched back to a conversation, showed it empty while
the model still had all of it. Here the items are the session's history, then what was added, and each listed
item can be read back by its id (DevUI finds only added ones, by ids its listing does not show). What the page was
shown beside a turn and the history does not hold (a run's charts and file links: display only, never model input,
`artifacts.py`) is kept too (`Shown`: `SHOWN_MAX_BYTES` for the whole store, the oldest dropped first) and listed
right after the tool result it followed, so a reloaded page shows the charts again.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from agent_framework import Content, InMemoryHistoryProvider, Message
from agent_framework_devui._conversations import InMemoryConversationStore
from starlette.types import ASGIApp, Receive, Scope, Send

from ..conversation import conversation_key
from .history import Bounds, message_bytes

SHOWN_MAX_BYTES = 32 * 1024 * 1024  # displays kept for the page, all conversations together (a chart: ~30 KB)


class Shown:
    """What the page was shown beside conversations' turns, by (conversation id, the tool call it followed): at most
    `max_bytes` of image data and text in all, the oldest dropped first (a display larger than that is not kept)."""

    def __init__(self, max_bytes: int = SHOWN_MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sizes: OrderedDict[tuple[str, str], int] = OrderedDict()  # the oldest first
        self._by_conversation: dict[str, dict[str, list[Content]]] = {}

    def keep(self, conversation_id: str, call_id: str, contents: list[Content]) -> None:
        self._drop((conversation_id, call_id))
        size = sum(len(c.uri or "") + len(c.text or "") for c in contents)
        if size > self.max_bytes:
            return
        self._sizes[(conversation_id, call_id)] = size
        self._by_conversation.setdefault(conversation_id, {})[call_id] = list(contents)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._sizes)))

    def of(self, conversation_id: str) -> dict[str, list[Content]]:
        """This conversation's displays, by the call each followed."""
        return dict(self._by_conversation.get(conversation_id, {}))

    def forget(self, conversation_id: str) -> None:
        for call_id in list(self._by_conversation.get(conversation_id, ())):
            self._drop((conversation_id, call_id))

    def _drop(self, key: tuple[str, str]) -> None:
        size = self._sizes.pop(key, None)
        if size is None:
            return
        self.bytes -= size
        calls = self._by_conversation[key[0]]
        del calls[key[1]]
        if not calls:
            del self._by_conversation[key[0]]


def bounded_store_class(bounds: Bounds, max_traces: int = 200, shown_max_bytes: int = SHOWN_MAX_BYTES,
                        others: Callable[[], int] = lambda: 0) -> type[InMemoryConversationStore]:
    """DevUI's store within `bounds`; `others`: the bytes of conversations kept elsewhere within the same
    `max_bytes` (the lean path's)."""

    class BoundedConversationStore(InMemoryConversationStore):
        def __init__(self) -> None:
            super().__init__()
            self.shown = Shown(shown_max_bytes)
            self.sizes: OrderedDict[str, int] = OrderedDict()  # bytes held by conversation, least recent first
            self.trace_sizes: dict[str, deque[int]] = {}  # each kept trace event's, by conversation
            self.bytes = 0

        def create_conversation(self, metadata=None, conversation_id=None):
            """DevUI's; past `max_conversations`, the least recently used (made or run) goes."""
            created = super().create_conversation(metadata=metadata, conversation_id=conversation_id)
            self.bytes -= self.sizes.pop(created.id, 0)  # (an id made again: DevUI replaced it)
            self.sizes[created.id] = 0
            while len(self._conversations) > bounds.max_conversations:
                self._evict(next(iter(self.sizes)))
            return created

        def delete_conversation(self, conversation_id: str):
            self._forget(conversation_id)
            return super().delete_conversation(conversation_id)

        def bound(self, conversation_id: str) -> None:
            """Bring the conversation's history within the bounds (after each of its runs: `BoundsRuns`), then the
            store's: the least recently used conversations are evicted while the total is over."""
            data = self._conversations.get(conversation_id)
            if data is None:
                return
            kept = _kept_messages(data["session"])
            room = bounds.max_bytes - others()
            size = _trim(kept, bounds.max_items, room) if kept else 0
            size += sum(message_bytes(message) for message in data["messages"])  # added through `add_items`
            size += sum(self.trace_sizes.get(conversation_id, ()))  # its trace panel's
            self.bytes += size - self.sizes.pop(conversation_id, 0)
            self.sizes[conversation_id] = size  # the most recently used now
            while self.bytes > room:  # the least recently used that holds anything, never this one
                victim = next((key for key, held in self.sizes.items() if held and key != conversation_id), None)
                if victim is None:
                    break
                self._evict(victim)

        async def add_items(self, conversation_id: str, items: list[dict[str, Any]]):
            """DevUI's, then at most `max_items` added messages kept (the oldest dropped), and the store bounded."""
            added = await super().add_items(conversation_id, items)
            data = self._conversations[conversation_id]
            index = self._item_index.get(conversation_id, {})
            excess = len(data["messages"]) - bounds.max_items
            if excess > 0:
                del data["messages"][:excess]
                for item in data["items"][:excess]:  # DevUI's items, one per added message, in the same order
                    index.pop(item.id, None)
                del data["items"][:excess]
            self.bound(conversation_id)
            return added

        def _evict(self, conversation_id: str) -> None:
            self._conversations.pop(conversation_id, None)
            self._item_index.pop(conversation_id, None)
            self._forget(conversation_id)

        def _forget(self, conversation_id: str) -> None:
            self.bytes -= self.sizes.pop(conversation_id, 0)
            self.trace_sizes.pop(conversation_id, None)
            self.shown.forget(conversation_id)

        def keep_shown(self, conversation_id: str, call_id: str, contents: list[Content]) -> None:
            """What a run in this conversation showed after the tool call `call_id` (`artifacts.keep_shown`)."""
            if conversation_id in self._conversations:
                self.shown.keep(conversation_id, call_id, contents)

        async def list_items(self, conversation_id: str, limit: int = 100, after: str | None = None,
                             order: str = "asc"):
            data = self._conversations.get(conversation_id)
            history = _history(data["session"], self.shown.of(conversation_id)) if data else []
            if not history:
                return await super().list_items(conversation_id, limit=limit, after=after, order=order)
            added = data["messages"]
            data["messages"] = [*history, *added]  # what DevUI lists; its listing awaits nothing, so no add is lost
            try:
                return await super().list_items(conversation_id, limit=limit, after=after, order=order)
            finally:
                data["messages"] = added

        async def get_item(self, conversation_id: str, item_id: str):
            item = await super().get_item(conversation_id, item_id)  # the added ones, by the id they were given
            if item is None and conversation_id in self._conversations:  # one the listing gave: by that id
                listed, _ = await self.list_items(conversation_id, limit=sys.maxsize)
                item = next((each for each in listed if each.id == item_id), None)
            return item

        def add_trace(self, conversation_id: str, trace_event: dict[str, Any]) -> None:
            """DevUI's, at most `max_traces` kept (the oldest dropped), their bytes counted with the conversation's
            (a span's attributes each: about 1.3 KB, two a page run here, so 200 are about 260 KB)."""
            super().add_trace(conversation_id, trace_event)
            data = self._conversations.get(conversation_id)
            if not data:
                return
            traces = data.get("traces", [])
            sizes = self.trace_sizes.setdefault(conversation_id, deque())
            sizes.append(len(json.dumps(trace_event, default=str)))
            if len(traces) > max_traces:
                del traces[:-max_traces]
            while len(sizes) > len(traces):
                sizes.popleft()

    return BoundedConversationStore


def _kept_messages(session) -> list[Message] | None:
    """The list of messages the agent's `InMemoryHistoryProvider` keeps in `session` (its default source id)."""
    state = getattr(session, "state", None) or {}
    kept = state.get(InMemoryHistoryProvider.DEFAULT_SOURCE_ID)
    messages = kept.get("messages") if isinstance(kept, dict) else None
    return messages if isinstance(messages, list) else None


def _trim(messages: list[Message], max_items: int, max_bytes: int) -> int:
    """Drop the oldest whole turns (a turn starts at a user message) of `messages`, in place, until at most
    `max_items` and `max_bytes` are left or only the last turn is; the bytes left (`history.message_bytes`)."""
    sizes = [message_bytes(message) for message in messages]
    size, cut = sum(sizes), 0
    for start in (i for i, message in enumerate(messages) if i and _role(message) == "user"):
        if len(messages) - cut <= max_items and size <= max_bytes:
            break
        size -= sum(sizes[cut:start])
        cut = start
    del messages[:cut]
    return size


def _role(message: Message) -> str:
    return str(getattr(message.role, "value", message.role))


def _history(session, shown: dict[str, list[Content]]) -> list[Message]:
    """The messages the agent's `InMemoryHistoryProvider` keeps in `session` (the agent is built with its default
    source id), as DevUI's listing can read them: a call's arguments as the JSON text a Responses item carries (the
    framework keeps them parsed, and DevUI's listing fails on a dict), and after a tool result what was `shown`
    after it, as an assistant message (DevUI lists its images as `input_image` parts, which the page draws). The
    kept messages are not changed."""
    listed = []
    for message in _kept_messages(session) or ():
        listed.append(_listable(message))
        for content in message.contents if shown else ():
            if content.type == "function_result" and content.call_id in shown:
                listed.append(Message(role="assistant", contents=shown[content.call_id]))
    return listed


def _listable(message: Message) -> Message:
    if not any(c.type == "function_call" and not isinstance(c.arguments, str) for c in message.contents):
        return message
    contents = [Content.from_function_call(c.call_id, c.name, arguments=json.dumps(c.arguments or {}))
                if c.type == "function_call" and not isinstance(c.arguments, str) else c for c in message.contents]
    return Message(role=message.role, contents=contents)


class BoundsRuns:
    """DevUI's ASGI app; after each page run in a conversation (`conversation_key`, set around it by the lean path's
    router, `http/responses.py`), DevUI's store brings that conversation and itself within their bounds: the turn
    the run added counts at once."""

    def __init__(self, app: ASGIApp, store: Callable[[], Any]):
        self.app = app
        self.store = store  # DevUI's store (made when its executor starts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            key = conversation_key.get()
            bound = getattr(self.store(), "bound", None) if key is not None else None
            if bound is not None:
                bound(key[1])


def install(bounds: Bounds, others: Callable[[], int] = lambda: 0, max_traces: int = 200) -> None:
    """DevUI's executor builds its store from this name when it starts."""
    import agent_framework_devui._executor as executor

    executor.InMemoryConversationStore = bounded_store_class(bounds, max_traces, others=others)
