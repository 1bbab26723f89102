"""Cost of one `print(1)` execution on the `subprocess` back end, beside a plain interpreter spawn.

    .venv/bin/python benchmarks/bench_subprocess.py [--runs 500] [--warmup 50] [--concurrent-runs 800]

Prints: p50/p95 latency at steady state (sequential), executions per second with 4 concurrent callers, the
p50 of `python -c pass` measured in the same run, the resident memory the warm pool adds, and the load
average. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from local_code_interpreter.sandbox import Limits, create_sandbox

CALLERS = 4


def percentile(sorted_ms: list[float], pct: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * pct / 100))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def children_rss_mib() -> float:
    """Resident memory of this process's children: here, the fork server and whatever it is running."""
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids += [int(pid) for pid in f.read().split()]
    return sum(rss_mib(pid) for pid in pids)


def spawn_baseline(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


async def once(sandbox) -> None:
    result = await sandbox.run("print(1)")
    if result.stdout != "1\n":
        raise SystemExit(f"unexpected result: {result}")


async def measure(args: argparse.Namespace) -> dict:
    server_before = rss_mib(os.getpid())
    sandbox = create_sandbox("subprocess", Limits(), max_concurrency=CALLERS)
    try:
        await sandbox.start()
        for _ in range(args.warmup):
            await once(sandbox)
        samples = []
        for _ in range(args.runs):
            started = time.perf_counter()
            await once(sandbox)
            samples.append((time.perf_counter() - started) * 1000)

        remaining = args.concurrent_runs

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await once(sandbox)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        per_second = args.concurrent_runs / (time.perf_counter() - started)
        fork_server = children_rss_mib()
        return {"samples": sorted(samples), "per_second": per_second, "fork_server": fork_server,
                "server_before": server_before, "server_after": rss_mib(os.getpid())}
    finally:
        await sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrent-runs", type=int, default=800)
    parser.add_argument("--spawns", type=int, default=50)
    args = parser.parse_args()
    baseline = spawn_baseline(args.spawns)
    figures = asyncio.run(measure(args))
    samples = figures["samples"]
    added = figures["fork_server"] + figures["server_after"] - figures["server_before"]
    print(f"subprocess print(1): runs={len(samples)} p50={percentile(samples, 50):.2f} ms "
          f"p95={percentile(samples, 95):.2f} ms | baseline `python -c pass` p50={percentile(baseline, 50):.2f} ms "
          f"(spawns={len(baseline)})")
    print(f"subprocess {CALLERS} concurrent callers: {figures['per_second']:.0f} executions/s "
          f"({args.concurrent_runs} runs)")
    print(f"memory: fork server VmRSS {figures['fork_server']:.1f} MiB, server VmRSS "
          f"{figures['server_before']:.1f} -> {figures['server_after']:.1f} MiB, warm pool adds {added:.1f} MiB")
    print("load average (1, 5, 15 min): " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
