"""What one caller's traffic costs another, on the real session engine (SessionManager + the subprocess back end).

    .venv/bin/python benchmarks/bench_neighbours.py [--cells 40] [--flooders 8] [--slots 2]

Alice runs `x += 1` cells in her session, one after another. Printed, p50 and p95 of her cells:
- alone (the baseline, same run);
- while Mallory keeps every execution slot busy: `--flooders` tasks, each running half-second cells in its own
  session without pause, through a gate of `--slots` slots. First as the gate shares its slots now (a freed slot
  goes to the waiting caller running the fewest), then as it did before (first come, first served: every caller
  counted as one, `fair.OWNER` left empty), in the same run;
- then Mallory opens conversation after conversation on a full replica (`LCI_MAX_SESSIONS`-like bound of 8), and
  whether Alice's session kept its state through it (its variables), beside how many of Mallory's were ended.
Figures only, no assertion; the load average at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from local_code_interpreter import sessions as sessions_module  # noqa: E402
from local_code_interpreter.fair import OWNER  # noqa: E402
from local_code_interpreter.sandbox import Limits, create_sandbox  # noqa: E402
from local_code_interpreter.sessions import SessionLimits, SessionManager  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


@contextlib.asynccontextmanager
async def engine(slots: int, max_sessions: int):
    sandbox = create_sandbox("subprocess", Limits(timeout_seconds=30.0), max_concurrency=slots,
                             queue_timeout_seconds=120.0)
    await sandbox.start()
    manager = SessionManager(sandbox, SessionLimits(max_sessions=max_sessions), language="python")
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close_all()
        await sandbox.close()


async def alice(manager: SessionManager, cells: int) -> list[float]:
    times = []
    for _ in range(cells):
        started = time.perf_counter()
        result = await manager.run(("alice", "c"), "x += 1")
        times.append((time.perf_counter() - started) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"Alice's cell failed: {result.stderr[-300:]}")
    return times


async def flooded(args: argparse.Namespace, fair: bool) -> list[float]:
    async with engine(args.slots, args.flooders + 4) as manager:
        await manager.run(("alice", "c"), "x = 0")
        for n in range(args.flooders):
            await manager.run(("mallory", f"c{n}"), "import time")
        stop = asyncio.Event()

        async def flood(n: int) -> None:
            while not stop.is_set():
                await manager.run(("mallory", f"c{n}"), "time.sleep(0.5)")

        if not fair:  # everyone counted as one caller: the first-come, first-served gate of before
            real = sessions_module.OWNER
            sessions_module.OWNER = _Unfair()
        try:
            floods = [asyncio.create_task(flood(n)) for n in range(args.flooders)]
            await asyncio.sleep(1.0)
            times = await alice(manager, args.cells)
            stop.set()
            await asyncio.gather(*floods)
        finally:
            if not fair:
                sessions_module.OWNER = real
        return times


class _Unfair:
    """Stands in for `fair.OWNER` in the session manager: every caller the same one."""

    def set(self, _owner):
        return OWNER.set("")

    def reset(self, token):
        OWNER.reset(token)


async def evictions(args: argparse.Namespace) -> tuple[bool, int, float]:
    async with engine(args.slots, 8) as manager:
        await manager.run(("alice", "c"), "secret = 'kept'")
        started = time.perf_counter()
        for n in range(args.conversations):
            await manager.run(("mallory", f"c{n}"), "1")
        per = (time.perf_counter() - started) * 1000 / args.conversations
        kept = (await manager.run(("alice", "c"), "secret")).value == "'kept'"
        return kept, manager.stats()["evicted"], per


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()

    async with engine(args.slots, 4) as manager:
        await manager.run(("alice", "c"), "x = 0")
        alone = await alice(manager, args.cells)
    print(f"Alice alone: {args.cells} cells, p50 {pct(alone, 50):.1f} ms, p95 {pct(alone, 95):.1f} ms")
    for fair in (True, False):
        times = await flooded(args, fair)
        how = "shared fairly (now)" if fair else "first come, first served (before)"
        print(f"Alice while Mallory keeps {args.slots} slots busy with {args.flooders} sessions of 0.5 s cells, gate "
              f"{how}: p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms")
    kept, evicted, per = await evictions(args)
    print(f"Mallory opens {args.conversations} conversations on a replica of 8 sessions ({per:.1f} ms each): "
          f"{evicted} sessions ended, Alice's state {'kept' if kept else 'LOST'}")
    print("load average: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    asyncio.run(main())
