"""What making room costs in a full store shared by many callers (`fair.Holdings`), by how many callers it holds.

    .venv/bin/python benchmarks/bench_owners.py [--evictions 2000]

A full store of 10,000 entries (the most notices `SessionManager` keeps) held by 1, 100, 1,000 or 10,000 callers:
per eviction (the next to give way found, taken out, a new caller's entry put in), the time of `give_way` by count
(the ranking `Holdings` keeps as entries come and go) beside, in the same run, the same holdings ranked afresh on
each eviction (`weight=held`: the same order, found by sorting every caller, as `give_way` did before). Then the
lean path's conversation store (`http/history.py`, 1,000 conversations) at its bound, per new conversation, by how
many callers hold its conversations. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from agent_framework import Content, Message  # noqa: E402

from local_code_interpreter.fair import Holdings  # noqa: E402
from local_code_interpreter.http.history import Bounds, ConversationStore  # noqa: E402

ENTRIES = 10000
CALLERS = (1, 100, 1000, 10000)


def per_eviction_us(callers: int, evictions: int, ranked_afresh: bool) -> float:
    holdings: Holdings[int] = Holdings()
    for n in range(ENTRIES):
        holdings[f"caller{n % callers}", f"k{n}"] = n
    weight = holdings.held if ranked_afresh else None
    started = time.perf_counter()
    for n in range(evictions):
        requester = f"caller{n % callers}"
        holdings.pop(next(holdings.give_way(requester, weight))[0])
        holdings[requester, f"new{n}"] = n
    return (time.perf_counter() - started) / evictions * 1e6


def store_us(callers: int, conversations: int) -> float:
    store = ConversationStore(Bounds(max_conversations=1000))
    turn = [Message("user", [Content.from_text("print(1)")])]
    for n in range(2000):  # full
        store.record(store.resolve(f"caller{n % callers}", None, None), f"fill{n}", turn)
    started = time.perf_counter()
    for n in range(conversations):
        store.record(store.resolve(f"caller{(n + 7) % callers}", None, None), f"r{n}", turn)
    return (time.perf_counter() - started) / conversations * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evictions", type=int, default=2000)
    args = parser.parse_args()
    print(f"a full store of {ENTRIES} entries, per eviction (us): callers, give_way by count, "
          "every caller ranked afresh (before)")
    for callers in CALLERS:
        afresh = per_eviction_us(callers, max(50, args.evictions // max(1, callers // 100)), True)
        print(f"{callers:>7} {per_eviction_us(callers, args.evictions, False):10.1f} {afresh:10.1f}")
    print("conversation store at its bound (1000), per new conversation (us): callers, time")
    for callers in CALLERS:
        print(f"{callers:>7} {store_us(callers, args.evictions):10.1f}")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
