"""ConversationStore keeps its item and byte sums as turns are recorded and dropped (not re-measured each turn):
the sums must always equal a full re-measurement, through appends, front drops, forks and evictions; what the
client saw of each turn (its exchange, kept as JSON) counts too and goes with its turn."""

import pytest
from agent_framework import Content, Message

from local_code_interpreter.http.history import Bounds, ConversationStore, Exchange, HistoryError, message_bytes
from local_code_interpreter.http.stored import render


def _measured(store: ConversationStore) -> tuple[int, dict]:
    per = {}
    for key, conversation in store._conversations.items():
        per[key] = (sum(len(t) for t in conversation.turns),
                    sum(message_bytes(m) for t in conversation.turns for m in t)
                    + sum(len(e.response) + sum(len(j) for _, j in (*e.inputs, *e.outputs))
                          for e in conversation.exchanges if e is not None))
    return sum(b for _, b in per.values()), per


def _check(store: ConversationStore) -> None:
    total, per = _measured(store)
    assert store.total_bytes == total
    owners_bytes, owners_indexed = {}, {}
    for key, conversation in store._conversations.items():
        assert (conversation.items, conversation.bytes) == per[key]
        assert len(conversation.sizes) == len(conversation.turns) == len(conversation.exchanges)
        owners_bytes[key[0]] = owners_bytes.get(key[0], 0) + conversation.bytes
        owners_indexed[key[0]] = owners_indexed.get(key[0], 0) + len(conversation.response_ids)
    # what each caller holds, kept as it goes for fair eviction, equals a full count too
    assert store._bytes.by_owner() == {owner: held for owner, held in owners_bytes.items() if held}
    assert store._indexed.by_owner() == {owner: held for owner, held in owners_indexed.items() if held}
    assert store._indexed.total == sum(owners_indexed.values()) >= len(store._responses)


def _turn(i: int) -> list[Message]:
    return [Message("user", [Content.from_text(f"print({i})" * (1 + i % 5))]), Message("assistant", [Content.from_text(str(i) * 7)])]


def _exchange(response_id: str, i: int) -> Exchange:
    return render(response_id, f"print({i})", {"id": response_id, "output": [{"type": "message", "content": []}]})


def test_sums_match_a_full_measurement_through_drops_forks_and_evictions():
    # Another caller holds one small conversation beside (so the sums are checked per caller too); it holds less
    # than "me" throughout, so what "me" evicts is as it would be alone (fair.py).
    store = ConversationStore(Bounds(max_items=9, max_bytes=4600, max_conversations=4))
    previous = None
    ids = []
    for i in range(60):
        if i % 5 == 2:  # another caller's turns beside, so per-caller sums are checked with more than one caller
            store.record(store.resolve("them", "conv_them", None), f"them_{i}", _turn(i))
        continuation = store.resolve("me", None, previous)
        response = f"resp_{i}"
        store.record(continuation, response, _turn(i), _exchange(response, i))
        ids.append(response)
        previous = response
        if i % 7 == 3:  # continue from an older response: a fork with the shared turns copied
            fork = store.resolve("me", None, ids[-2])
            store.record(fork, f"fork_{i}", _turn(i + 1000), _exchange(f"fork_{i}", i))
        if i % 11 == 5:  # a new conversation, so the count and byte bounds evict
            store.record(store.resolve("me", None, None), f"new_{i}", _turn(i))
        _check(store)
        for conversation in store._conversations.values():
            assert conversation.items <= 9 or len(conversation.turns) == 1
    assert store.total_bytes <= 4600 or len(store) == 1
    first = store._conversations[store._responses[previous][0]]
    assert first.first_turn > 0  # the oldest turns were dropped, and the sums followed
    assert store.exchange("me", previous) == _exchange(previous, 59)
    assert store.exchange("me", ids[0]) is None  # dropped with its turn
    assert store.exchange("someone else", previous) is None


def test_a_forgotten_conversation_takes_its_bytes_and_responses_but_nothing_of_anyone_else():
    store = ConversationStore(Bounds())
    mine = store.resolve("me", "conv_a", None)
    store.record(mine, "resp_mine", _turn(1))
    theirs = store.resolve("them", "conv_a", None)  # the same id, another caller
    store.record(theirs, "resp_theirs", _turn(2))
    before = store.total_bytes

    assert store.forget("me", "conv_a") is True
    _check(store)
    assert store.total_bytes == before - mine.conversation.bytes
    assert store.resolve("them", None, "resp_theirs").history  # theirs is whole
    with pytest.raises(HistoryError, match="not found"):
        store.resolve("me", None, "resp_mine")
    assert store.resolve("me", "conv_a", None).history == []  # the id starts afresh
    assert store.forget("me", "conv_missing") is False


def test_sums_match_after_items_are_deleted_from_kept_turns():
    """`delete_item` rebuilds a turn from what is left of it: the sums follow, the turn count (what response ids
    point at) stays, and a fork's copy of the turn is its own."""
    store = ConversationStore(Bounds(max_items=50, max_bytes=10**6, max_conversations=4))
    previous = None
    for i in range(4):
        continuation = store.resolve("me", None, previous)
        previous = f"resp_{i}"
        store.record(continuation, previous, _turn(i), _exchange(previous, i))
    fork = store.resolve("me", None, "resp_1")  # shares the first two turns' exchanges
    store.record(fork, "resp_fork", _turn(9), _exchange("resp_fork", 9))
    conversation = fork.conversation
    original = next(c for c in store._conversations.values() if c is not conversation)
    rebuilt = []

    def rebuild(items, waiting):
        rebuilt.append((items, waiting))
        return [Message("user", [Content.from_text("left")])]

    first_input = original.exchanges[0].inputs[0][0]
    turns_before = original.first_turn + len(original.turns)
    assert store.delete_item("me", original.id, first_input, rebuild) is True
    _check(store)
    assert original.turns[0][0].text == "left" and original.first_turn + len(original.turns) == turns_before
    assert fork.conversation.exchanges[0].inputs[0][0] == first_input  # the fork's turn is its own
    assert store.delete_item("me", original.id, "item_nothing", rebuild) is False
    assert store.delete_item("them", original.id, first_input, rebuild) is None  # another caller's: not theirs
    output = original.exchanges[0].outputs[0][0]
    assert store.delete_item("me", original.id, output, rebuild) is True  # the turn's last item: nothing left
    assert original.turns[0] == [] and len(rebuilt) == 1
    _check(store)
    assert store.exchange("me", "resp_0") is not None and store.exchange("me", "resp_3") is not None


def test_the_page_conversations_bytes_count_in_the_same_budget():
    """The web page's conversations (DevUI's store) are kept in the same LCI_CONVERSATIONS_MAX_BYTES: with them
    holding most of it, the lean path's store keeps less of its own (its least recently used evicted first, never
    its last one), and nothing of theirs is touched from here."""
    page = [0]
    store = ConversationStore(Bounds(max_bytes=10_000), others=lambda: page[0])
    for i in range(4):
        turn = [Message("user", [Content.from_text("x" * 2000)])]
        store.record(store.resolve("me", f"conv_{i}", None), f"resp_{i}", turn)
    assert len(store) == 4 and store.total_bytes > 8000
    page[0] = 5000
    store.record(store.resolve("me", "conv_4", None), "resp_4", [Message("user", [Content.from_text("y" * 10)])])
    assert store.total_bytes + page[0] <= 10_000 and len(store) == 3  # two of the oldest went
    assert store.resolve("me", "conv_3", None).history  # the most recent kept
    page[0] = 50_000  # the page alone over the budget: the lean store keeps its last conversation
    store.record(store.resolve("me", "conv_4", None), "resp_5", [Message("user", [Content.from_text("z" * 10)])])
    assert len(store) == 1
