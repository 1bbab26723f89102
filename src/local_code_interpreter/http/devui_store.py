"""DevUI's in-memory conversation store, bounded: at most `max_conversations` (the oldest is evicted when the page
creates one more) and at most `max_traces` trace events kept per conversation (the oldest dropped). DevUI's own
store keeps every conversation and every trace event for the life of the process."""

from __future__ import annotations

from typing import Any

from agent_framework_devui._conversations import InMemoryConversationStore


def bounded_store_class(max_conversations: int, max_traces: int = 200) -> type[InMemoryConversationStore]:
    class BoundedConversationStore(InMemoryConversationStore):
        def create_conversation(self, metadata=None, conversation_id=None):
            created = super().create_conversation(metadata=metadata, conversation_id=conversation_id)
            while len(self._conversations) > max_conversations:
                oldest = next(iter(self._conversations))
                self._conversations.pop(oldest, None)
                self._item_index.pop(oldest, None)
            return created

        def add_trace(self, conversation_id: str, trace_event: dict[str, Any]) -> None:
            super().add_trace(conversation_id, trace_event)
            data = self._conversations.get(conversation_id)
            if data and len(data.get("traces", [])) > max_traces:
                del data["traces"][:-max_traces]

    return BoundedConversationStore


def install(max_conversations: int, max_traces: int = 200) -> None:
    """DevUI's executor builds its store from this name when it starts."""
    import agent_framework_devui._executor as executor

    executor.InMemoryConversationStore = bounded_store_class(max_conversations, max_traces)
