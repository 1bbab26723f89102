"""DevUI's conversation store as the service runs it (`http/devui_store.py`): what it keeps of the page's displays
stays within its budget and goes with the conversation."""

from __future__ import annotations

from agent_framework import Content

from local_code_interpreter.http.devui_store import Shown, bounded_store_class


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
    store = bounded_store_class(max_conversations=2, shown_max_bytes=1 << 20)()
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
