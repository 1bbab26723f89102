"""Conversation history for the lean `/v1/responses` path, kept in memory and bounded.

A conversation is a list of turns (a turn: the input messages and the agent's reply messages). Each response id
points at its conversation and the number of turns it saw, so `previous_response_id` continues from exactly that
response (continuing from an older response forks a new conversation with the shared part copied; it keeps the
same session root, so the sandbox session is the chain's). Bounds (settings, environment variables):

- `LCI_CONVERSATION_MAX_ITEMS`: messages kept per conversation; the oldest whole turns are dropped beyond it.
- `LCI_CONVERSATION_ITEM_MAX_BYTES`: the largest message accepted; a larger input item is a 413, never stored.
- `LCI_CONVERSATIONS_MAX_BYTES`: all conversations together (messages and exchanges); past it, conversations are
  evicted.
- `LCI_CONVERSATIONS_MAX`: how many conversations; past it, one is evicted.

What is evicted is the least recently used conversation of the caller holding the most (bytes, conversations, or
responses, whichever bound was passed), never one of a caller holding less than the caller whose request passed it
(`fair.py`): a caller who sends a lot ends its own oldest conversations, not everyone else's.

A continuation naming what the store no longer holds gets a clear 404, so the client learns its history is gone
instead of the agent silently forgetting it: a `previous_response_id` evicted or unknown
(`previous_response_not_found`), and a `conversation` id this store evicted (`conversation_not_found`; the last
`LCI_CONVERSATIONS_MAX` evicted ids are remembered, bounded by caller like the conversations). Any other
`conversation` id starts a conversation under that id: a client may name its own (it is also the id of the
conversation's container, which a client can upload to before its first question). A restarted replica remembers
nothing, so there an old id starts empty too.

Beside each turn's messages (what the model is sent again) the store keeps the turn as the client saw it, as JSON
rendered once (`Exchange`, made by `http/stored.render`: the input items, the output items and the response), so
`http/stored.py` can serve them back without parsing anything; both count towards the bytes bound.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent_framework import Message

from ..fair import Holdings, Tally


class HistoryError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class Bounds:
    max_items: int = 200
    item_max_bytes: int = 1024 * 1024
    max_bytes: int = 256 * 1024 * 1024
    max_conversations: int = 1000


def message_bytes(message: Message) -> int:
    """What a message costs to keep: its text, arguments and results (what a model would be sent again)."""
    size = 64
    for content in message.contents:
        for attribute in ("text", "arguments", "result", "uri"):
            value = getattr(content, attribute, None)
            if value is not None:
                size += len(value) if isinstance(value, str) else len(repr(value))
    return size


Item = tuple[str, bytes]  # an item's id and the item as JSON


@dataclass(frozen=True)
class Exchange:
    """One turn as the client saw it, kept as JSON rendered once when the turn is recorded (reading it back never
    parses it): the request's input items, the response's output items, and the response object it got (a
    stream's: its final response event's; empty if that never came)."""
    response_id: str
    inputs: tuple[Item, ...]
    outputs: tuple[Item, ...]
    response: bytes

    @property
    def size(self) -> int:
        return len(self.response) + sum(len(item) for _, item in (*self.inputs, *self.outputs))


def turn_bytes(turn: list[Message], exchange: Exchange | None) -> int:
    return sum(message_bytes(m) for m in turn) + (exchange.size if exchange is not None else 0)


@dataclass
class Conversation:
    id: str
    owner: str
    root: str  # the session key's conversation id: the chain's first conversation
    turns: list[list[Message]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # turn_bytes of each kept turn, beside `turns`
    exchanges: list[Exchange | None] = field(default_factory=list)  # each kept turn as the client saw it
    first_turn: int = 0  # turns dropped from the front (so response turn counts stay valid)
    response_ids: deque[str] = field(default_factory=deque)  # the responses recorded in it, oldest first
    items: int = 0
    bytes: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))

    def messages(self, upto: int | None = None) -> list[Message]:
        end = len(self.turns) if upto is None else max(0, upto - self.first_turn)
        return [m for turn in self.turns[:end] for m in turn]


@dataclass(frozen=True)
class Continuation:
    conversation: Conversation
    history: list[Message]
    upto: int  # absolute turn count the new turn follows
    transient: bool = False  # `store: false` with nothing to continue: nobody can ever continue it


class ConversationStore:
    def __init__(self, bounds: Bounds = Bounds(), others: Callable[[], int] = lambda: 0):
        self.bounds = bounds
        self.others = others  # bytes of conversations kept elsewhere within the same `max_bytes` (the page's)
        # (owner, conversation id) -> Conversation: two callers using the same id never share a conversation
        self._conversations: Holdings[Conversation] = Holdings()
        # response id -> ((owner, conversation id), turns it saw)
        self._responses: dict[str, tuple[tuple[str, str], int]] = {}
        self._bytes = Tally()  # what the conversations hold, per caller and in all: bytes...
        self._indexed = Tally()  # ...and response ids (`response_ids`)
        # (owner, conversation id) of conversations evicted: continuing one is a 404, not a fresh start
        self._evicted: Holdings[bool] = Holdings()

    def __len__(self) -> int:
        return len(self._conversations)

    @property
    def total_bytes(self) -> int:
        return self._bytes.total

    def check_input(self, messages: list[Message]) -> None:
        for message in messages:
            if message_bytes(message) > self.bounds.item_max_bytes:
                raise HistoryError(413, f"an input item is larger than {self.bounds.item_max_bytes} bytes "
                                   "(LCI_CONVERSATION_ITEM_MAX_BYTES)", "item_too_large")

    def resolve(self, owner: str, conversation_id: str | None, previous_response_id: str | None,
                keep: bool = True) -> Continuation:
        """The conversation to continue (a new one when neither id is given; not kept when `keep` is false, as
        for `store: false`) and its history."""
        if previous_response_id is not None:
            conversation, upto = self._responded(owner, previous_response_id)
            if conversation is None:
                raise HistoryError(404, f"previous response {previous_response_id!r} not found (unknown, deleted, "
                                   "or its conversation was evicted)", "previous_response_not_found")
            if upto < conversation.first_turn:
                raise HistoryError(404, f"previous response {previous_response_id!r} is older than the kept "
                                   "history of its conversation", "previous_response_not_found")
            if upto != conversation.first_turn + len(conversation.turns):  # continuing from an older response
                fork = self._new(owner, f"conv_{uuid.uuid4().hex}", conversation.root)
                fork.turns = [list(t) for t in conversation.turns[:upto - conversation.first_turn]]
                fork.exchanges = conversation.exchanges[:upto - conversation.first_turn]
                fork.first_turn = conversation.first_turn
                self._account(fork)
                conversation = fork
            self._conversations.touch((owner, conversation.id))
            return Continuation(conversation, conversation.messages(upto), upto)
        if conversation_id is not None:
            conversation = self._conversations.get((owner, conversation_id))
            if conversation is None:
                if (owner, conversation_id) in self._evicted:
                    raise HistoryError(404, f"conversation {conversation_id!r} not found: it was evicted (this "
                                       f"replica keeps {self.bounds.max_conversations} conversations and "
                                       f"{self.bounds.max_bytes} bytes of them; the least recently used of the "
                                       "caller holding the most go first), so its history is gone; start a new "
                                       "conversation", "conversation_not_found")
                conversation = self._new(owner, conversation_id, conversation_id)
            self._conversations.touch((owner, conversation_id))
            return Continuation(conversation, conversation.messages(),
                                conversation.first_turn + len(conversation.turns))
        if not keep:
            transient = f"conv_{uuid.uuid4().hex}"
            return Continuation(Conversation(transient, owner, transient), [], 0, transient=True)
        conversation = self._new(owner, f"conv_{uuid.uuid4().hex}", None)
        return Continuation(conversation, [], 0)

    def record(self, continuation: Continuation, response_id: str | None, turn: list[Message],
               exchange: Exchange | None = None) -> None:
        """Append the finished turn (and the `exchange` the client saw) and index the response (None: items a
        client added to the conversation, no response); then enforce the bounds."""
        conversation = continuation.conversation
        key = (conversation.owner, conversation.id)
        if self._conversations.get(key) is not conversation:  # evicted while the run went on: keep nothing
            return
        owner = conversation.owner
        size = turn_bytes(turn, exchange)  # only the new turn is measured: O(turn), not O(history)
        conversation.turns.append(turn)
        conversation.exchanges.append(exchange)
        conversation.sizes.append(size)
        conversation.items += len(turn)
        self._add_bytes(conversation, size)
        if response_id is not None:
            self._responses[response_id] = (key, conversation.first_turn + len(conversation.turns))
            conversation.response_ids.append(response_id)
            self._indexed.add(owner, 1)
        if len(conversation.response_ids) > self.bounds.max_items:  # responses past any kept history
            self._unindex_oldest(conversation)
        while self._indexed.total > self.bounds.max_conversations * 64:
            self._unindex_oldest(next(c for _, c in self._conversations.give_way(owner, self._indexed.of)
                                      if c.response_ids))
        while conversation.items > self.bounds.max_items and len(conversation.turns) > 1:
            dropped, size = conversation.turns.pop(0), conversation.sizes.pop(0)
            conversation.exchanges.pop(0)
            conversation.first_turn += 1
            conversation.items -= len(dropped)
            self._add_bytes(conversation, -size)
        while self.total_bytes + self.others() > self.bounds.max_bytes and len(self._conversations) > 1:
            self._evict(owner, self._bytes.of)

    def _new(self, owner: str, conversation_id: str, root: str | None) -> Conversation:
        while len(self._conversations) >= self.bounds.max_conversations:
            self._evict(owner)
        conversation = Conversation(conversation_id, owner, root or conversation_id)
        self._conversations[(owner, conversation_id)] = conversation
        return conversation

    def pending_calls(self, owner: str, conversation_id: str | None, previous_response_id: str | None) -> set[str]:
        """The function calls the history a request continues left without a result (a client's tool, answered by
        that client); looked up only, nothing created or touched."""
        conversation, upto = None, None
        if previous_response_id is not None:
            conversation, upto = self._responded(owner, previous_response_id)
        elif conversation_id is not None:
            conversation = self._conversations.get((owner, conversation_id))
        return _waiting(conversation.messages(upto) if conversation is not None else [])

    def _responded(self, owner: str, response_id: str) -> tuple[Conversation | None, int]:
        """The owner's kept conversation a response is in, and the turns it saw; (None, 0) if none."""
        found = self._responses.get(response_id)
        conversation = self._conversations.get(found[0]) if found and found[0][0] == owner else None
        return (conversation, found[1]) if conversation is not None else (None, 0)

    def conversation(self, owner: str, conversation_id: str) -> Conversation | None:
        """The owner's kept conversation of that id (looking does not make it recently used)."""
        return self._conversations.get((owner, conversation_id))

    def exchange(self, owner: str, response_id: str) -> Exchange | None:
        """The owner's kept response of that id, as the client saw it; None if unknown, another caller's, not
        stored (`store: false`), deleted, or dropped with its turn or conversation."""
        conversation, upto = self._responded(owner, response_id)
        if conversation is None:
            return None
        index = upto - conversation.first_turn - 1
        exchange = conversation.exchanges[index] if 0 <= index < len(conversation.exchanges) else None
        return exchange if exchange is not None and exchange.response_id == response_id else None

    def delete_response(self, owner: str, response_id: str) -> bool:
        """The owner's response can no longer be retrieved or continued from; its turn stays in its conversation
        (the conversation's items are the conversation's). False if there was no such response."""
        if self.exchange(owner, response_id) is None:
            return False
        del self._responses[response_id]
        return True

    def delete_item(self, owner: str, conversation_id: str, item_id: str,
                    rebuild: Callable[[list[dict], set[str]], list[Message]]) -> bool | None:
        """Delete an item of the owner's conversation: from its turn as the client sees it, and from what the model
        is sent, that turn rebuilt from its remaining items (`rebuild(items, calls the earlier turns leave waiting)`;
        its ValueError, or a call whose output a later turn holds, is a HistoryError: the history would not hold
        together). None when the conversation is not kept here, False when it has no such item."""
        conversation = self._conversations.get((owner, conversation_id))
        if conversation is None:
            return None
        for index, exchange in enumerate(conversation.exchanges):
            if exchange is None or not any(i == item_id for i, _ in (*exchange.inputs, *exchange.outputs)):
                continue
            kept = replace(exchange, inputs=tuple(i for i in exchange.inputs if i[0] != item_id),
                           outputs=tuple(i for i in exchange.outputs if i[0] != item_id))
            items = [json.loads(item) for _, item in (*kept.inputs, *kept.outputs)]
            try:
                turn = rebuild(items, _waiting(conversation.messages(conversation.first_turn + index))) if items else []
            except ValueError as error:
                raise HistoryError(400, f"item {item_id!r} cannot be deleted alone: {error}", "invalid_request") \
                    from None
            answered_later = {c.call_id for later in conversation.turns[index + 1:] for m in later
                              for c in m.contents if c.type == "function_result"}
            lost = (_calls(conversation.turns[index]) - _calls(turn)) & answered_later
            if lost:
                raise HistoryError(400, f"item {item_id!r} is the call {sorted(lost)[0]!r} whose output a later "
                                   "item holds: delete that output first", "invalid_request")
            size = turn_bytes(turn, kept)
            conversation.items += len(turn) - len(conversation.turns[index])
            self._add_bytes(conversation, size - conversation.sizes[index])
            conversation.turns[index], conversation.exchanges[index], conversation.sizes[index] = turn, kept, size
            return True
        return False

    def forget(self, owner: str, conversation_id: str) -> bool:
        """Drop the owner's conversation (deleted by them) and the responses that pointed into it; False if it
        was not kept. Its forks (continued from one of its older responses) keep their own history."""
        self._evicted.pop((owner, conversation_id))  # deleted by its owner: the id is theirs to use again
        conversation = self._conversations.pop((owner, conversation_id), None)
        if conversation is None:
            return False
        self._drop(conversation)
        return True

    def _evict(self, requester: str, weight=None) -> None:
        """Forget a conversation and the responses that pointed into it: the least recently used of the caller
        holding the most (by `weight`, else by conversations), never one of a caller holding less than
        `requester`. What the store holds stays bounded by live conversations, not by how many responses were
        ever served."""
        key, victim = next(self._conversations.give_way(requester, weight))
        self._conversations.pop(key)
        self._drop(victim)
        self._evicted[key] = True
        while len(self._evicted) > self.bounds.max_conversations:
            self._evicted.pop(next(self._evicted.give_way(requester))[0])

    def _drop(self, conversation: Conversation) -> None:
        """Take a conversation that left the store out of the sums (its own stay as they were)."""
        self._bytes.add(conversation.owner, -conversation.bytes)
        self._indexed.add(conversation.owner, -len(conversation.response_ids))
        for response_id in conversation.response_ids:
            self._responses.pop(response_id, None)

    def _account(self, conversation: Conversation) -> None:
        """Measure a conversation whose turns were set wholesale (a fork); `record` keeps the sums as it goes."""
        conversation.sizes = [turn_bytes(turn, exchange)
                              for turn, exchange in zip(conversation.turns, conversation.exchanges)]
        conversation.items = sum(len(turn) for turn in conversation.turns)
        self._add_bytes(conversation, sum(conversation.sizes) - conversation.bytes)

    def _add_bytes(self, conversation: Conversation, delta: int) -> None:
        conversation.bytes += delta
        self._bytes.add(conversation.owner, delta)

    def _unindex_oldest(self, conversation: Conversation) -> None:
        """The conversation's oldest response can no longer be retrieved or continued from."""
        self._responses.pop(conversation.response_ids.popleft(), None)
        self._indexed.add(conversation.owner, -1)


def _calls(messages: list[Message]) -> set[str]:
    return {c.call_id for m in messages for c in m.contents if c.type == "function_call"}


def _waiting(messages: list[Message]) -> set[str]:
    """The calls `messages` leave without a result (a client's, answered in a later turn)."""
    return _calls(messages) - {c.call_id for m in messages for c in m.contents if c.type == "function_result"}
