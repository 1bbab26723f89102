"""Which conversation the current agent run belongs to, so the `execute_code` tool finds that conversation's
session. The HTTP paths set it around each agent run (DevUI and `/v1/responses`: the conversation id, or the
root of a `previous_response_id` chain); the terminal chat sets it once. Unset means a one-shot execution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .identity import Caller

# (owner, conversation id): the owner keeps two callers' conversations apart even when their ids collide.
conversation_key: ContextVar[tuple[str, str] | None] = ContextVar("conversation_key", default=None)


@contextmanager
def in_conversation(conversation_id: str, caller: Caller | None = None) -> Iterator[tuple[str, str]]:
    """Run the enclosed agent run (and the tasks it starts) as part of this conversation."""
    key = ((caller.id if caller else "local"), conversation_id)
    token = conversation_key.set(key)
    try:
        yield key
    finally:
        conversation_key.reset(token)
