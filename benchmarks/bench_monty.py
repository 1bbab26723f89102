"""Latency of one `print(1)` execution on the `monty` back end, at steady state.

    .venv/bin/python benchmarks/bench_monty.py [--runs 2000] [--warmup 200]

Prints p50/p95/p99 of `Backend.run` (fresh session, limits, output capture included). Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from local_code_interpreter.sandbox import Limits, create_sandbox


def percentile(sorted_ms: list[float], pct: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * pct / 100))]


async def measure(runs: int, warmup: int) -> list[float]:
    backend = create_sandbox("monty", Limits())
    try:
        for _ in range(warmup):
            await backend.run("print(1)")
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            result = await backend.run("print(1)")
            samples.append((time.perf_counter() - started) * 1000)
            if result.stdout != "1\n":
                raise SystemExit(f"unexpected result: {result}")
        return sorted(samples)
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    samples = asyncio.run(measure(args.runs, args.warmup))
    print(
        f"monty print(1): runs={len(samples)} p50={percentile(samples, 50):.3f} ms "
        f"p95={percentile(samples, 95):.3f} ms p99={percentile(samples, 99):.3f} ms "
        f"mean={statistics.fmean(samples):.3f} ms"
    )


if __name__ == "__main__":
    main()
