"""What the SessionManager adds on top of a back end's own sessions, and what an idle monty session costs.

    .venv/bin/python benchmarks/bench_manager.py [--backends monty,subprocess] [--runs 300]

For each back end prints p50/p95 of:
- create: `open_session` + first `run("x = 0")` directly, and the same through `SessionManager.run` on a new key;
- live: `x += 1` in a live session directly (`session.run`) and through `SessionManager.run` (lookup, per-key lock,
  LRU bookkeeping, expiry check);
and for monty the state bytes an idle session keeps in the server (it holds no process). Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from local_code_interpreter.sandbox import Limits, SandboxUnavailable, create_sandbox
from local_code_interpreter.sessions import SessionLimits, SessionManager


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def line(label: str, samples: list[float]) -> str:
    return f"  {label:<34} p50 {statistics.median(samples):8.3f} ms   p95 {pct(samples, 95):8.3f} ms   n={len(samples)}"


async def timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    value = await coro
    return (time.perf_counter() - started) * 1000, value


async def bench(backend: str, runs: int, creates: int) -> None:
    sandbox = create_sandbox(backend, Limits(), max_concurrency=4)
    await sandbox.start()
    manager = SessionManager(sandbox, SessionLimits(max_sessions=creates + 10), language="python")
    try:
        try:
            probe = await sandbox.open_session("python")
        except SandboxUnavailable as error:
            print(f"{backend}: no sessions here: {error}")
            return
        await probe.close()

        direct_create, managed_create = [], []
        for n in range(creates):
            async def direct():
                session = await sandbox.open_session("python")
                await session.run("x = 0")
                return session
            ms, session = await timed(direct())
            direct_create.append(ms)
            await session.close()
            ms, _ = await timed(manager.run(("bench", f"k{n}"), "x = 0"))
            managed_create.append(ms)
            await manager.close(("bench", f"k{n}"))

        session = await sandbox.open_session("python")
        await session.run("x = 0")
        await manager.run(("bench", "live"), "x = 0")
        direct_live, managed_live = [], []
        for _ in range(runs):
            ms, _ = await timed(session.run("x += 1"))
            direct_live.append(ms)
            ms, _ = await timed(manager.run(("bench", "live"), "x += 1"))
            managed_live.append(ms)
        check = await manager.run(("bench", "live"), "x")
        if check.value != str(runs):
            raise SystemExit(f"{backend}: state was not kept: x = {check.value!r}, expected {runs}")
        print(f"{backend}:")
        print(line("create + first run, direct", direct_create))
        print(line("create + first run, via manager", managed_create))
        print(line("live x += 1, direct", direct_live))
        print(line("live x += 1, via manager", managed_live))
        print(f"  manager overhead on a live run:    p50 "
              f"{statistics.median(managed_live) - statistics.median(direct_live):+.3f} ms")
        state = getattr(session, "state_bytes", None)
        if state is not None:
            await session.run("import math\nrows = [[i, i * i] for i in range(1000)]")
            print(f"  idle session kept in the server:   {state} bytes after {runs + 1} cells of `x += 1` (Monty "
                  f"keeps each cell's code), {session.state_bytes} bytes with a 1000-row list added; no process")
        await session.close()
    finally:
        await manager.close_all()
        await sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="monty,subprocess")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--creates", type=int, default=50)
    args = parser.parse_args()
    with open("/proc/loadavg") as handle:
        print(f"load average: {handle.read().split()[:3]}")
    for backend in args.backends.split(","):
        asyncio.run(bench(backend, args.runs, args.creates))


if __name__ == "__main__":
    main()
