"""The server's garbage collector settings (`server.settle_collector`), in a fresh interpreter so that this test
process's own collector is left alone: start-up objects are never walked again, a request's worth of live objects
is not collected (walked and promoted) mid-flight, and cyclic garbage is still reclaimed."""

import subprocess
import sys

PROGRAM = r"""
import gc, weakref
from local_code_interpreter.server import settle_collector

startup = [[i] for i in range(20000)]  # what start-up builds and keeps
settle_collector()
assert gc.get_freeze_count() >= 20000, gc.get_freeze_count()
assert not any(o is startup for o in gc.get_objects()), "a start-up object is still walked"

before = gc.get_stats()[0]["collections"]
request = [[i] for i in range(4000)]  # a request's live containers (about 4,000 measured)
assert gc.get_stats()[0]["collections"] == before, "a collection ran in the middle of a request"

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a
gone = []
weakref.finalize(a, gone.append, "a")
del a, b
churn = [[[i] for i in range(1000)] for _ in range(20)]  # 20,000 more: past the threshold
assert gc.get_stats()[0]["collections"] > before, "no collection ran at all"
gc.collect(1)  # whatever generation the cycle reached by now
assert gone == ["a"], "cyclic garbage was not reclaimed"
print("ok")
"""


def test_start_up_is_frozen_a_request_is_not_collected_mid_flight_and_cycles_are_still_reclaimed():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]
