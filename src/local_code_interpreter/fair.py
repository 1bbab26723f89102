"""Fair shares, between callers, of what a replica bounds for everyone.

`Holdings`: per-caller entries in a bounded store. The live sandbox sessions and the notices owed about ended ones
(`sessions.py`), the lean path's conversations (`http/history.py`) and the sessions API's asynchronous executions
(`http/aca.py`). When a store is full, somebody's entry has to go. Least recently used across everyone would let
one caller who opens conversations fast end every other caller's: their variables, files and histories gone
because of someone else's traffic. Here the caller holding the most gives way first, its own least recently used
entry first, and a caller never displaces one who holds less than it does. A caller past its share ends its own
oldest entries; callers who hold little keep theirs.

`OWNER`: on whose behalf sandbox work runs, so the execution gate (`sandbox/bounded.py`) hands a freed slot to the
waiting caller running the fewest. `Budget`: an amount drawn on at once (request bodies being received,
`http/guard.py`), one caller at most half of it. `Tally`: how much each caller holds (the per-caller sums those
use: executions running, bytes and responses kept).

Callers are told apart by the authenticated principal (`identity.Caller.id`): with Microsoft Entra ID each user or
workload is its own; everyone sharing one bearer token, or the unauthenticated loopback, is one caller, and for
them this is plain least-recently-used.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, str]  # (owner, identifier)

# The caller on whose behalf the current task runs sandbox work, read by the execution gate (`sandbox/bounded.py`)
# to share its slots fairly: set by the HTTP guard for each request (one-shot runs too, as on a back end that keeps
# no sessions), and by the session manager around each use of a session. "" when unknown.
OWNER: ContextVar[str] = ContextVar("lci_owner", default="")


class Holdings(Generic[V]):
    """Entries keyed by (owner, identifier), each owner's least recently used first.

    A mapping for the operations the stores use (`get`, `[]`, `in`, `len`, `pop`, `values`), plus `touch` (now the
    most recently used) and `give_way` (who goes when the store is full).

    Who gives way by count is kept ranked as entries come and go (`_ranking`), so finding it costs the same with ten
    callers or ten thousand (a store full of notices owed to as many callers, each holding one): sorting every
    caller on each eviction made the cost of a request grow with the callers a process had seen."""

    def __init__(self) -> None:
        self._owners: dict[str, OrderedDict[Key, V]] = {}
        self._used: dict[Key, int] = {}  # when each entry was last used, as a count: orders owners that tie
        self._clock = 0
        # A heap of (-entries held, when its oldest entry was used, owner), smallest first: who gives way first is
        # at the top. An owner's tuple is pushed again whenever either changes; tuples that no longer match their
        # owner are stale, dropped when they reach the top, and all of them when the heap outgrows its owners.
        self._ranking: list[tuple[int, int, str]] = []

    def __len__(self) -> int:
        return len(self._used)

    def __contains__(self, key: object) -> bool:
        return key in self._used

    def __getitem__(self, key: Key) -> V:
        if key not in self._used:
            raise KeyError(key)
        return self._owners[key[0]][key]

    def __setitem__(self, key: Key, value: V) -> None:
        """Add or replace; either way it is now the owner's most recently used."""
        entries = self._owners.setdefault(key[0], OrderedDict())
        ranked_anew = key not in entries or next(iter(entries)) == key  # its count or its oldest entry changes
        entries[key] = value
        self._touch(key)
        if ranked_anew:
            self._rank(key[0])

    def get(self, key: Key, default: V | None = None) -> V | None:
        entries = self._owners.get(key[0]) if key in self._used else None
        return default if entries is None else entries[key]

    def touch(self, key: Key) -> None:
        """`key` (held) is now its owner's most recently used entry."""
        oldest = next(iter(self._owners[key[0]])) == key
        self._touch(key)
        if oldest:  # the owner's oldest entry is another one now
            self._rank(key[0])

    def _touch(self, key: Key) -> None:
        self._owners[key[0]].move_to_end(key)
        self._clock += 1
        self._used[key] = self._clock

    def pop(self, key: Key, default: V | None = None) -> V | None:
        if key not in self._used:
            return default
        del self._used[key]
        entries = self._owners[key[0]]
        value = entries.pop(key)
        if not entries:
            del self._owners[key[0]]
        self._rank(key[0])
        return value

    def values(self) -> list[V]:
        """Every entry, owner by owner (a copy: the caller may change the holdings while it goes through them)."""
        return [value for entries in self._owners.values() for value in entries.values()]

    def items(self) -> list[tuple[Key, V]]:
        return [item for entries in self._owners.values() for item in entries.items()]

    def clear(self) -> None:
        self._owners.clear()
        self._used.clear()
        self._ranking.clear()

    def held(self, owner: str) -> int:
        """How many entries `owner` holds."""
        entries = self._owners.get(owner)
        return 0 if entries is None else len(entries)

    def give_way(self, requester: str | None = None,
                 weight: Callable[[str], int] | None = None) -> Iterator[tuple[Key, V]]:
        """The entries in the order they give way when the store is full: the owner holding the most first (by
        `weight(owner)`, else by how many entries it holds; of owners that tie, the one whose oldest entry was
        used longest ago), each owner's least recently used entry first. Owners holding less than `requester`
        are left out: a caller makes room at the expense of callers holding at least as much as it does, itself
        included. Lazy: stop going through it before changing the holdings."""
        if weight is None:
            yield from self._by_count(self.held(requester) if requester is not None else 0)
            return
        floor = weight(requester) if requester is not None else 0
        ranked = sorted(((weight(owner), -self._used[next(iter(entries))], owner)
                         for owner, entries in self._owners.items()), reverse=True)
        for held, _, owner in ranked:
            if held < floor:
                return
            yield from self._owners[owner].items()

    def _by_count(self, floor: int) -> Iterator[tuple[Key, V]]:
        """`give_way` by count, from the ranking: its heap is walked in order without being changed (a frontier of
        the nodes whose parents were taken), so reaching the first owner costs O(log n) and each next one as much."""
        ranking = self._ranking
        while ranking and not self._current(ranking[0]):
            heapq.heappop(ranking)
        if not ranking or -ranking[0][0] < floor:
            return
        first = ranking[0][2]
        yield from self._owners[first].items()  # usually all a caller looks at
        frontier = [(ranking[child], child) for child in (1, 2) if child < len(ranking)]
        heapq.heapify(frontier)
        seen = {first}
        while frontier:
            rank, index = heapq.heappop(frontier)
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(ranking):
                    heapq.heappush(frontier, (ranking[child], child))
            owner = rank[2]
            if owner in seen or not self._current(rank):
                continue
            if -rank[0] < floor:
                return
            seen.add(owner)
            yield from self._owners[owner].items()

    def _rank_of(self, owner: str, entries: OrderedDict[Key, V]) -> tuple[int, int, str]:
        return -len(entries), self._used[next(iter(entries))], owner

    def _current(self, rank: tuple[int, int, str]) -> bool:
        entries = self._owners.get(rank[2])
        return bool(entries) and self._rank_of(rank[2], entries) == rank

    def _rank(self, owner: str) -> None:
        entries = self._owners.get(owner)
        if entries:
            heapq.heappush(self._ranking, self._rank_of(owner, entries))
        if len(self._ranking) > 2 * len(self._owners) + 64:  # mostly stale: rebuilt from the owners, O(n)
            self._ranking = [self._rank_of(owner, entries) for owner, entries in self._owners.items()]
            heapq.heapify(self._ranking)


class Tally:
    """How much of something each caller holds, and all callers together; a caller holding none is not kept (so
    what it remembers is bounded by the callers holding some now, not by every caller ever seen)."""

    def __init__(self) -> None:
        self.total = 0
        self._held: dict[str, int] = {}

    def add(self, owner: str, delta: int) -> None:
        self.total += delta
        held = self._held.get(owner, 0) + delta
        if held:
            self._held[owner] = held
        else:
            self._held.pop(owner, None)

    def of(self, owner: str) -> int:
        return self._held.get(owner, 0)

    def by_owner(self) -> dict[str, int]:
        return dict(self._held)


class Budget:
    """An amount (bytes) that callers draw on at once, such as request bodies being received: `take` succeeds while
    both the total and the caller's share (half the total: one caller never holds all of it) have room; `give`
    returns it."""

    def __init__(self, total: int):
        self.total, self.share = total, total // 2
        self._taken = Tally()

    @property
    def used(self) -> int:
        return self._taken.total

    def take(self, owner: str, amount: int) -> bool:
        if self._taken.total + amount > self.total or self._taken.of(owner) + amount > self.share:
            return False
        self._taken.add(owner, amount)
        return True

    def give(self, owner: str, amount: int) -> None:
        self._taken.add(owner, -amount)

    def held(self, owner: str) -> int:
        return self._taken.of(owner)
