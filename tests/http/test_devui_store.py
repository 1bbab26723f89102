"""DevUI's conversation store as the service runs it (`http/devui_store.py`): the page's conversations stay within
the bounds the lean path's do (messages per conversation, bytes in all, count), and what it keeps of the page's
displays stays within its budget and goes with the conversation."""

from __future__ import annotations

import asyncio
import json

from agent_framework import Content, InMemoryHistoryProvider, Message

from local_code_interpreter.http.devui_store import Shown, bounded_store_class
from local_code_interpreter.http.history import Bounds, message_bytes

KIB = 1024


def chart(size: int) -> list[Content]:
    return [Content.from_uri("data:image/png;base64," + "A" * size, media_type="image/png")]


def test_displays_are_kept_within_the_budget_the_oldest_dropped_first():
    shown = Shown(max_bytes=100_000)
    for n in range(10):
        shown.keep("conv_a" if n % 2 else "conv_b", f"call_{n}", chart(30_000))
    assert shown.bytes <= 100_000
    kept = {**shown.of("conv_a"), **shown.of("conv_b")}
    assert sorted(kept) == ["call_7", "call_8", "call_9"]  # the newest three of ~30 KB fit
    shown.keep("conv_a", "call_huge", chart(200_000))  # larger than the whole budget: not kept, nothing dropped
    assert "call_huge" not in shown.of("conv_a") and sorted(shown.of("conv_a")) == ["call_7", "call_9"]
    shown.keep("conv_a", "call_9", chart(10))  # the same call again: replaced, not counted twice
    assert shown.bytes == len(chart(30_000)[0].uri) * 2 + len(chart(10)[0].uri)


def test_a_conversation_deleted_or_evicted_takes_its_displays_with_it():
    store = bounded_store_class(Bounds(max_conversations=2), shown_max_bytes=1 << 20)()
    first, second = (store.create_conversation().id for _ in range(2))
    store.keep_shown(first, "call_1", chart(100))
    store.keep_shown(second, "call_2", chart(100))
    store.keep_shown("conv_unknown", "call_3", chart(100))  # no such conversation: nothing kept
    assert store.shown.of(first) and store.shown.of(second) and not store.shown.of("conv_unknown")
    store.delete_conversation(second)
    assert not store.shown.of(second)
    store.create_conversation()
    store.create_conversation()  # the third: the oldest (first) is evicted
    assert not store.shown.of(first) and store.shown.bytes == 0


def turn(n: int, size: int = 10) -> list[Message]:
    """One page turn as the agent's history provider keeps it: the message, the call, its output, the reply."""
    code = f"print({n})" + " " * size
    return [Message(role="user", contents=[Content.from_text(code)]),
            Message(role="assistant", contents=[Content.from_function_call(f"call_{n}", "execute_code",
                                                                           arguments={"code": code})]),
            Message(role="tool", contents=[Content.from_function_result(f"call_{n}", result=f"{n}\n")]),
            Message(role="assistant", contents=[Content.from_text(f"it printed {n}")])]


def page_conversation(store, turns: int, size: int = 10) -> tuple[str, list[Message]]:
    """A conversation whose session holds `turns` page turns, as after that many runs."""
    conversation = store.create_conversation().id
    history = [message for n in range(turns) for message in turn(n, size)]
    session = store.get_session(conversation)
    session.state[InMemoryHistoryProvider.DEFAULT_SOURCE_ID] = {"messages": history}
    return conversation, history


def test_a_page_conversation_keeps_at_most_max_items_messages_its_oldest_whole_turns_dropped():
    store = bounded_store_class(Bounds(max_items=10))()
    conversation, history = page_conversation(store, turns=6)
    store.bound(conversation)
    assert len(history) == 8 and history[0].text == "print(4)" + " " * 10  # the last two turns, whole
    assert store.sizes[conversation] == store.bytes > 0
    long_turn = turn(9) + [Message(role="assistant", contents=[Content.from_text("more")])] * 12
    history.extend(long_turn)  # one turn longer than the bound: kept whole, alone
    store.bound(conversation)
    assert history == long_turn


def test_the_page_conversations_stay_within_max_bytes_the_least_recently_used_evicted_first():
    store = bounded_store_class(Bounds(max_bytes=1024 * KIB))()
    first, _ = page_conversation(store, turns=3, size=100 * KIB)  # ~600 KiB: the code is in the message and call
    second, _ = page_conversation(store, turns=3, size=100 * KIB)
    store.bound(first)
    store.bound(second)  # together over the budget: the least recently used (first) goes
    assert store.get_conversation(first) is None and store.get_conversation(second) is not None
    assert store.bytes == store.sizes[second] <= 1024 * KIB
    alone, history = page_conversation(store, turns=8, size=100 * KIB)  # alone over it: its oldest turns go
    store.bound(alone)
    assert store.get_conversation(second) is None  # ...after every other conversation
    one_turn = sum(message_bytes(message) for message in turn(0, size=100 * KIB))
    assert store.bytes <= 1024 * KIB < store.bytes + one_turn  # as many whole turns as fit
    kept = len(history) // 4
    assert len(history) == 4 * kept and history[0].text.startswith(f"print({8 - kept}) ")  # the newest, whole


def test_items_added_to_a_page_conversation_are_bounded_too():
    store = bounded_store_class(Bounds(max_items=3))()
    conversation = store.create_conversation().id

    async def add():
        added = []
        for n in range(5):
            added += await store.add_items(conversation, [{"type": "message", "role": "user", "content": f"note {n}"}])
        listed, _ = await store.list_items(conversation, limit=100)
        return added, listed, [await store.get_item(conversation, item.id) for item in added]

    added, listed, read = asyncio.run(add())
    assert [item.content[0].text for item in listed] == ["note 2", "note 3", "note 4"]
    assert read[:2] == [None, None] and [item.content[0].text for item in read[2:]] == ["note 2", "note 3", "note 4"]
    assert store.sizes[conversation] == store.bytes > 0


def test_the_page_yields_room_the_lean_paths_conversations_hold():
    """The same LCI_CONVERSATIONS_MAX_BYTES holds the lean path's conversations too (`others`): what they hold is
    not the page's to use. Here they hold 600 KiB of 1 MiB: a page conversation keeps its newest turns within the
    424 KiB left, and another page conversation used less recently goes first."""
    lean = [0]
    store = bounded_store_class(Bounds(max_bytes=1024 * KIB), others=lambda: lean[0])()
    older, _ = page_conversation(store, turns=1, size=50 * KIB)
    store.bound(older)
    lean[0] = 600 * KIB
    newer, history = page_conversation(store, turns=4, size=50 * KIB)  # ~100 KiB a turn: 4 fit, with `older` not
    store.bound(newer)
    assert store.get_conversation(older) is None and store.bytes <= 424 * KIB
    assert len(history) == 16
    lean[0] = 900 * KIB
    store.bound(newer)
    assert store.bytes <= 124 * KIB and len(history) == 4  # its newest turn


def test_a_page_conversations_trace_events_count_in_its_bytes():
    """The trace panel's events (a span's attributes each, 200 kept a conversation) are memory the conversation
    holds: the kept ones count in its bytes, the dropped ones no more."""
    store = bounded_store_class(Bounds(), max_traces=3)()
    conversation = store.create_conversation().id
    events = [{"type": "trace_span", "span_id": str(n), "attributes": {"note": "x" * (1000 * (n + 1))}}
              for n in range(5)]
    for event in events:
        store.add_trace(conversation, event)
    store.bound(conversation)
    assert len(store.get_traces(conversation)) == 3
    kept = sum(len(json.dumps(event)) for event in events[2:])
    assert store.sizes[conversation] == store.bytes == kept
    store.delete_conversation(conversation)
    assert store.bytes == 0 and not store.trace_sizes


def test_past_max_conversations_the_least_recently_used_goes():
    store = bounded_store_class(Bounds(max_conversations=3))()
    used, _ = page_conversation(store, turns=1)
    idle = store.create_conversation().id
    other, _ = page_conversation(store, turns=1)
    store.bound(other)
    store.bound(used)  # run again: the most recently used
    store.create_conversation()
    assert store.get_conversation(idle) is None  # made before the others ran: the least recently used
    store.create_conversation()
    assert store.get_conversation(other) is None and store.get_conversation(used) is not None
