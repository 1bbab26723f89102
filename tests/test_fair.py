"""fair.Holdings: who gives way when a store shared by callers is full."""

from __future__ import annotations

import pytest

from local_code_interpreter.fair import Holdings


def order(holdings: Holdings, requester=None, weight=None) -> list:
    return [key for key, _ in holdings.give_way(requester, weight)]


def test_the_caller_holding_the_most_gives_way_first_its_least_recently_used_first():
    h = Holdings()
    h["alice", "a1"] = 1
    for n in range(3):
        h["mallory", f"m{n}"] = n
    h["bob", "b1"] = 1
    h["bob", "b2"] = 2
    h.touch(("mallory", "m0"))  # now her most recently used
    assert order(h) == [("mallory", "m1"), ("mallory", "m2"), ("mallory", "m0"),
                        ("bob", "b1"), ("bob", "b2"), ("alice", "a1")]


def test_callers_holding_alike_give_way_by_whose_oldest_entry_was_used_longest_ago():
    h = Holdings()
    h["bob", "b1"] = 1
    h["alice", "a1"] = 1
    assert order(h)[0] == ("bob", "b1")
    h.touch(("bob", "b1"))
    assert order(h)[0] == ("alice", "a1")


def test_a_requester_never_displaces_a_caller_holding_less_than_it_does():
    h = Holdings()
    h["alice", "a1"] = 1
    for n in range(3):
        h["mallory", f"m{n}"] = n
    assert {key[0] for key in order(h, "mallory")} == {"mallory"}
    assert {key[0] for key in order(h, "alice")} == {"mallory", "alice"}
    assert order(h, "carol")[-1] == ("alice", "a1")  # a caller holding nothing may displace anyone


def test_a_weight_other_than_the_count_decides_who_holds_the_most():
    h = Holdings()
    h["alice", "a1"] = 1
    h["alice", "a2"] = 1
    h["bob", "b1"] = 1
    size = {"alice": 10, "bob": 500}
    assert order(h, weight=size.get)[0] == ("bob", "b1")
    assert order(h, "alice", weight=size.get) == [("bob", "b1"), ("alice", "a1"), ("alice", "a2")]


def test_it_behaves_as_a_mapping_of_the_entries_it_holds():
    h = Holdings()
    h["alice", "a"] = "x"
    h["alice", "a"] = "y"  # replaced, still one entry
    assert len(h) == 1 and h["alice", "a"] == "y" and ("alice", "a") in h and h.held("alice") == 1
    assert h.get(("bob", "a")) is None and h.get(("alice", "b"), "none") == "none"
    with pytest.raises(KeyError):
        h["alice", "b"]
    assert h.pop(("alice", "a")) == "y" and h.pop(("alice", "a"), "gone") == "gone"
    assert len(h) == 0 and h.held("alice") == 0 and order(h) == [] and h.values() == []
    h["bob", "b"] = 1
    h.clear()
    assert len(h) == 0 and h.items() == []


def test_a_tally_keeps_each_callers_share_and_the_sum_and_forgets_a_caller_holding_none():
    from local_code_interpreter.fair import Tally

    t = Tally()
    t.add("alice", 3)
    t.add("bob", 2)
    t.add("alice", -3)
    assert (t.total, t.of("alice"), t.of("bob"), t.by_owner()) == (2, 0, 2, {"bob": 2})


def test_giving_way_by_count_keeps_the_order_of_sorting_every_caller_through_any_changes():
    """The ranking kept as entries come and go gives exactly the order of ranking every caller afresh (which the
    weighted path still does: `weight=h.held` is the same count), through adds, replacements, touches and removals,
    for every requester."""
    import random

    rng = random.Random(7)
    h = Holdings()
    owners = [f"o{n}" for n in range(12)]
    for step in range(3000):
        owner = rng.choice(owners)
        held = [key for key, _ in h.items() if key[0] == owner]
        action = rng.random()
        if action < 0.45 or not held:
            h[owner, f"k{rng.randrange(8)}"] = step
        elif action < 0.75:
            h.touch(rng.choice(held))
        else:
            h.pop(rng.choice(held))
        requester = rng.choice(owners + [None])
        assert order(h, requester) == order(h, requester, weight=h.held), step
    assert len(h._ranking) <= 2 * len(owners) + 64  # stale ranks do not pile up


def test_finding_who_gives_way_does_not_grow_with_the_callers_held(monkeypatch):
    """With ten thousand callers holding one entry each (notices owed to as many), the next to give way is found by
    looking at a few of them, not all: a full store's evictions cost the same however many callers it has seen."""
    h = Holdings()
    for n in range(10000):
        h[f"caller{n}", "notice"] = n
    looked = []  # every time a caller's holding is looked at: its count (`held`), or its rank checked (`_current`)
    for name in ("held", "_current"):
        if hasattr(Holdings, name):
            method = getattr(Holdings, name)
            monkeypatch.setattr(Holdings, name, lambda self, *a, method=method: looked.append(a) or method(self, *a))
    for n in range(100):
        key, _ = next(h.give_way(f"new{n}"))
        h.pop(key)
        h[f"new{n}", "notice"] = n
    assert key == ("caller99", "notice")  # the least recently used, as plain LRU among callers holding alike
    assert len(looked) < 100 * 20, len(looked)
