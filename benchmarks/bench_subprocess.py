"""Cost of one `print(1)` execution on the `subprocess` back end, beside a plain interpreter spawn and a
Jupyter kernel's execute round trip measured in the same run.

    .venv/bin/python benchmarks/bench_subprocess.py [--runs 500] [--warmup 50] [--concurrent-runs 800]
        [--spares 2] [--no-jupyter]

Prints, for the default number of spare children and for none (the spare-child effect): p50/p95 latency at
steady state (sequential, one execution every 20 ms as a request stream would come), executions per second
with 4 concurrent callers, and CPU per execution (the server's, and the template's and children's); then the
p50 of `python -c pass`, the template's memory, a Jupyter kernel's `print(i*3)` round trip, and the load
average. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from local_code_interpreter.sandbox import Limits  # noqa: E402
from local_code_interpreter.sandbox.bounded import Bounded  # noqa: E402
from local_code_interpreter.sandbox.process import Backend  # noqa: E402
from local_code_interpreter.sandbox.quota import pss  # noqa: E402

CALLERS = 4


def percentile(sorted_ms: list[float], pct: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * pct / 100))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and of its children it has reaped (utime, stime, cutime, cstime of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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


async def measure(args: argparse.Namespace, spares: int) -> dict:
    sandbox = Bounded(Backend(Limits(), spares=spares), CALLERS)
    try:
        await sandbox.start()
        for _ in range(args.warmup):
            await once(sandbox)
        samples = []
        for _ in range(args.runs):
            await asyncio.sleep(args.pause)  # requests arrive spaced; the refill happens in between
            started = time.perf_counter()
            await once(sandbox)
            samples.append((time.perf_counter() - started) * 1000)

        remaining = args.concurrent_runs

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await once(sandbox)

        template = sandbox.backend.supervisor._process.pid
        await asyncio.sleep(1)  # the spares are refilled before we count
        server_cpu, children_cpu = cpu_seconds(resource.RUSAGE_SELF), tree_cpu_seconds(template)
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        per_second = args.concurrent_runs / (time.perf_counter() - started)
        server_cpu = cpu_seconds(resource.RUSAGE_SELF) - server_cpu
        await asyncio.sleep(1)  # the last children are reaped (and the spares refilled, as after any run)
        children_cpu = tree_cpu_seconds(template) - children_cpu
        template_pss = pss(template) / 2**20
    finally:
        await sandbox.close()
    return {"samples": sorted(samples), "per_second": per_second, "template_pss": template_pss,
            "server_cpu_ms": server_cpu * 1000 / args.concurrent_runs,
            "sandbox_cpu_ms": children_cpu * 1000 / args.concurrent_runs}


def jupyter_print(runs: int) -> list[float]:
    import jupyter_kernel

    with jupyter_kernel.kernel() as client:
        return sorted(jupyter_kernel.round_trips_ms(client, "print({i}*3)", runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrent-runs", type=int, default=800)
    parser.add_argument("--spawns", type=int, default=50)
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between sequential executions")
    parser.add_argument("--no-jupyter", action="store_true")
    args = parser.parse_args()
    baseline = spawn_baseline(args.spawns)
    for spares in (args.spares, 0):
        figures = asyncio.run(measure(args, spares))
        samples = figures["samples"]
        print(f"subprocess print(1), {spares} spare children: runs={len(samples)} p50={percentile(samples, 50):.2f} ms "
              f"p95={percentile(samples, 95):.2f} ms | {CALLERS} concurrent callers: {figures['per_second']:.0f} "
              f"executions/s ({args.concurrent_runs} runs), CPU per execution: server {figures['server_cpu_ms']:.2f} ms, "
              f"template and children {figures['sandbox_cpu_ms']:.2f} ms")
    print(f"baseline `python -c pass` p50={percentile(baseline, 50):.2f} ms (spawns={len(baseline)}); "
          f"template PSS {figures['template_pss']:.1f} MiB")
    if not args.no_jupyter:
        kernel = jupyter_print(args.runs)
        print(f"jupyter execute print(i*3): p50={statistics.median(kernel):.2f} ms p95={percentile(kernel, 95):.2f} ms")
    print("load average (1, 5, 15 min): " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
