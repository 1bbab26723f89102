"""The template's warm heap stays shared, and on huge pages, while the template forks and serves (`heap.py`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest

from local_code_interpreter.sandbox import Limits, heap
from local_code_interpreter.sandbox.process import Backend, report

pytestmark = pytest.mark.skipif(heap.holes() is None, reason="needs glibc's mallinfo2 (glibc 2.33 or later)")

HOLES = textwrap.dedent("""
    import json
    from local_code_interpreter.sandbox import heap

    objects = [bytes(100) for _ in range(50000)]
    freed = {id(o) for o in objects[::2]}
    del objects[::2]  # holes all over the heap
    before = heap.holes()
    reused_before = sum(id(bytes(100)) in freed for _ in range(200))
    taken, detail = heap.fill_holes()
    fresh = [bytes(100) for _ in range(2000)]
    print(json.dumps({"before": before, "after": heap.holes(), "taken": taken, "detail": detail,
                      "reused_before": reused_before, "reused_after": sum(id(o) in freed for o in fresh)}))
""")


def test_filling_the_holes_leaves_malloc_only_the_top_of_the_heap():
    env = dict(os.environ, PYTHONMALLOC="malloc")  # objects straight from malloc, as in the template
    out = subprocess.run([sys.executable, "-c", HOLES], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["before"] > 2_000_000, result  # 25,000 freed objects left holes
    assert result["reused_before"] > 0, f"before the fill, new objects land in the holes: {result}"
    assert result["after"] < heap.HOLE_SLACK, result
    assert result["reused_after"] == 0, f"after it, none does: {result}"
    assert result["before"] - heap.HOLE_SLACK < result["taken"] <= result["before"], result
    assert "KiB of holes" in result["detail"]


def _huge_pages_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))


@pytest.mark.skipif(not report(Limits()).usable, reason="the subprocess back end needs Linux")
def test_the_template_keeps_its_heap_on_huge_pages_while_it_forks():
    """Every fork copies, and every child's exit unmaps, one entry per huge page the template's heap keeps:
    once the template has served each kind of request, more runs and sessions must not split its huge pages.
    On the 2-vCPU machine, with the holes taken: no loss in 10 runs of 10, 35-45 MiB kept. Without: 14-25 MiB kept,
    and up to 6 MiB more lost over these rounds, so this check fails only some of the time (1 run in 4, and 0 in 6
    when the loss was at most 2 MiB); the hello check below fails every time."""

    async def scenario():
        backend = Backend(Limits(timeout_seconds=20), spares=1, session_spares=1)
        try:
            for i in range(15):  # every path the template serves: one-shot runs, sessions, their ends
                assert (await backend.run(f"import numpy\nprint({i})")).stdout == f"{i}\n"  # warm: a library
                session = await backend.open_session()
                await session.run("x = 1")
                await session.close()
            template = backend.supervisor._process.pid
            settled = _huge_pages_kib(template)
            for i in range(80):
                assert (await backend.run(f"import numpy\nprint({i})")).stdout == f"{i}\n"
                session = await backend.open_session()
                await session.run("x = list(range(1000))")
                await session.close()
            return backend.supervisor.hello, settled, _huge_pages_kib(template)
        finally:
            await backend.close()

    hello, settled, after = asyncio.run(scenario())
    assert "KiB of holes" in hello["heap"], hello
    if settled == 0:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            pytest.skip(f"the template's heap is on no huge page here (transparent_hugepage: {f.read().strip()})")
    assert after >= settled - 2048, f"huge pages split while serving: {settled} KiB -> {after} KiB"
