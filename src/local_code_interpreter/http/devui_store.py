"""DevUI's in-memory conversation store as the service runs it. Bounded: at most `max_conversations` (the oldest is
evicted when the page creates one more) and at most `max_traces` trace events kept per conversation (the oldest
dropped). DevUI's own store keeps every conversation and every trace event for the life of the process.

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
from collections import OrderedDict
from typing import Any

from agent_framework import Content, InMemoryHistoryProvider, Message
from agent_framework_devui._conversations import InMemoryConversationStore

SHOWN_MAX_BYTES = 32 * 1024 * 1024  # displays kept for the page, all conversations together (a chart: ~30 KB)


class Shown:
    """What the page was shown beside conversations' turns, by (conversation id, the tool call it followed): at most
    `max_bytes` of image data and text in all, the oldest dropped first (a display larger than that is not kept)."""

    def __init__(self, max_bytes: int = SHOWN_MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[tuple[str, str], tuple[list[Content], int]] = OrderedDict()

    def keep(self, conversation_id: str, call_id: str, contents: list[Content]) -> None:
        self._drop((conversation_id, call_id))
        size = sum(len(c.uri or "") + len(c.text or "") for c in contents)
        if size > self.max_bytes:
            return
        self._kept[(conversation_id, call_id)] = (list(contents), size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._kept)))

    def of(self, conversation_id: str) -> dict[str, list[Content]]:
        """This conversation's displays, by the call each followed."""
        return {call: contents for (conversation, call), (contents, _) in self._kept.items()
                if conversation == conversation_id}

    def forget(self, conversation_id: str) -> None:
        for key in [key for key in self._kept if key[0] == conversation_id]:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        dropped = self._kept.pop(key, None)
        if dropped is not None:
            self.bytes -= dropped[1]


def bounded_store_class(max_conversations: int, max_traces: int = 200,
                        shown_max_bytes: int = SHOWN_MAX_BYTES) -> type[InMemoryConversationStore]:
    class BoundedConversationStore(InMemoryConversationStore):
        def __init__(self) -> None:
            super().__init__()
            self.shown = Shown(shown_max_bytes)

        def create_conversation(self, metadata=None, conversation_id=None):
            created = super().create_conversation(metadata=metadata, conversation_id=conversation_id)
            while len(self._conversations) > max_conversations:
                oldest = next(iter(self._conversations))
                self._conversations.pop(oldest, None)
                self._item_index.pop(oldest, None)
                self.shown.forget(oldest)
            return created

        def delete_conversation(self, conversation_id: str):
            self.shown.forget(conversation_id)
            return super().delete_conversation(conversation_id)

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
            super().add_trace(conversation_id, trace_event)
            data = self._conversations.get(conversation_id)
            if data and len(data.get("traces", [])) > max_traces:
                del data["traces"][:-max_traces]

    return BoundedConversationStore


def _history(session, shown: dict[str, list[Content]]) -> list[Message]:
    """The messages the agent's `InMemoryHistoryProvider` keeps in `session` (the agent is built with its default
    source id), as DevUI's listing can read them: a call's arguments as the JSON text a Responses item carries (the
    framework keeps them parsed, and DevUI's listing fails on a dict), and after a tool result what was `shown`
    after it, as an assistant message (DevUI lists its images as `input_image` parts, which the page draws). The
    kept messages are not changed."""
    state = getattr(session, "state", None) or {}
    kept = state.get(InMemoryHistoryProvider.DEFAULT_SOURCE_ID)
    messages = kept.get("messages") if isinstance(kept, dict) else None
    listed = []
    for message in messages or ():
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


def install(max_conversations: int, max_traces: int = 200) -> None:
    """DevUI's executor builds its store from this name when it starts."""
    import agent_framework_devui._executor as executor

    executor.InMemoryConversationStore = bounded_store_class(max_conversations, max_traces)
