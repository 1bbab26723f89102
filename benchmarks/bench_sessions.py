"""Sessions of the `subprocess` back end beside a Jupyter kernel (`jupyter_client` + `ipykernel`), same run.

    .venv/bin/python benchmarks/bench_sessions.py [--runs 300] [--sessions 1,10,100] [--no-jupyter]

Prints: session creation p50 (a spare child taken, the next one forked after), execution in a live session
p50 (`x += 1`), the first `import pandas` in a fresh session (pre-imported by the template), a matplotlib
chart round trip (the figure comes back as PNG without `savefig`), and the PSS of 1, 10 and 100 idle sessions
(their processes, and the template they share pages with). Then the kernel's figures, and the load average.
Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from local_code_interpreter.sandbox import Limits  # noqa: E402
from local_code_interpreter.sandbox.process import Backend  # noqa: E402
from local_code_interpreter.sandbox.quota import memory_of_tree, pss  # noqa: E402

CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"


def p(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def pss_mib(pids: list[int]) -> float:
    return sum(memory_of_tree(pid) for pid in pids) / 2**20


async def ours(args: argparse.Namespace) -> dict:
    backend = Backend(Limits(), spares=0, session_spares=2)
    figures: dict = {}
    try:
        await backend.start()
        warm = await backend.open_session()  # the first one forks on demand; the rest come from spares
        await warm.close()
        await asyncio.sleep(0.5)
        creates = []
        for _ in range(args.creates):
            started = time.perf_counter()
            session = await backend.open_session()
            creates.append((time.perf_counter() - started) * 1000)
            await session.run("pass")
            await session.close()
            await asyncio.sleep(0.05)  # the refill forks the next spare off the request path
        figures["create"] = creates

        session = await backend.open_session()
        await session.run("x = 0")
        live = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = await session.run("x += 1")
            live.append((time.perf_counter() - started) * 1000)
            assert result.exit_code == 0, result
        figures["live"] = live
        await session.close()

        await asyncio.sleep(0.3)
        fresh = await backend.open_session()
        started = time.perf_counter()
        result = await fresh.run("import pandas")
        figures["pandas"] = (time.perf_counter() - started) * 1000
        assert result.exit_code == 0, result
        await fresh.run(CHART)
        charts = []
        for _ in range(20):
            started = time.perf_counter()
            result = await fresh.run(CHART)
            charts.append((time.perf_counter() - started) * 1000)
            assert result.images and result.images[0].data.startswith(b"\x89PNG"), result
        figures["chart"] = charts
        await fresh.close()

        template = backend.supervisor._process.pid
        figures["pss"] = {}
        sessions = []
        for count in args.sessions:
            while len(sessions) < count:
                session = await backend.open_session()
                await session.run("x = 1")
                sessions.append(session)
            await asyncio.sleep(0.5)
            figures["pss"][count] = (pss_mib([s.child.pid for s in sessions]), pss(template) / 2**20)
        for session in sessions:
            await session.close()
    finally:
        await backend.close()
    return figures


def jupyter(args: argparse.Namespace) -> dict:
    import jupyter_kernel

    figures = {"start": jupyter_kernel.start_ms(3)}
    with jupyter_kernel.kernel() as client:
        jupyter_kernel.execute(client, "x = 0")
        figures["live"] = jupyter_kernel.round_trips_ms(client, "x += 1", args.runs)
        started = time.perf_counter()
        jupyter_kernel.execute(client, "import pandas")
        figures["pandas"] = (time.perf_counter() - started) * 1000
        chart = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt, io\n"
                 "plt.plot([1, 2, 3]); b = io.BytesIO(); plt.savefig(b, format='png'); plt.close('all'); len(b.getvalue())")
        jupyter_kernel.execute(client, chart)
        figures["chart"] = jupyter_kernel.round_trips_ms(client, chart, 20)
        kernel_pid = client.parent.provisioner.process.pid if hasattr(client, "parent") and client.parent else None
        figures["pss"] = pss_mib([kernel_pid]) if kernel_pid else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--creates", type=int, default=50)
    parser.add_argument("--sessions", default="1,10,100")
    parser.add_argument("--no-jupyter", action="store_true")
    args = parser.parse_args()
    args.sessions = [int(n) for n in args.sessions.split(",")]
    figures = asyncio.run(ours(args))
    print(f"subprocess session create: p50 {statistics.median(figures['create']):.2f} ms, "
          f"p95 {p(figures['create'], 95):.2f} ms (target <= 10 ms)")
    print(f"subprocess live execution x += 1: p50 {statistics.median(figures['live']):.2f} ms, "
          f"p95 {p(figures['live'], 95):.2f} ms (target <= 2 ms)")
    print(f"subprocess first import pandas in a fresh session: {figures['pandas']:.1f} ms (target <= 20 ms)")
    print(f"subprocess matplotlib chart round trip (PNG captured, no savefig): p50 {statistics.median(figures['chart']):.1f} ms")
    for count, (sessions, template) in figures["pss"].items():
        print(f"subprocess PSS of {count} idle sessions: {sessions:.1f} MiB + template {template:.1f} MiB = "
              f"{sessions + template:.1f} MiB" + (" (target <= 1024 MiB)" if count == 100 else ""))
    if not args.no_jupyter:
        kernel = jupyter(args)
        print(f"jupyter kernel start (to first execute): p50 {statistics.median(kernel['start']):.0f} ms")
        print(f"jupyter execute x += 1: p50 {statistics.median(kernel['live']):.2f} ms, p95 {p(kernel['live'], 95):.2f} ms")
        print(f"jupyter first import pandas: {kernel['pandas']:.0f} ms")
        print(f"jupyter matplotlib chart round trip (savefig): p50 {statistics.median(kernel['chart']):.1f} ms")
        if kernel["pss"] is not None:
            print(f"jupyter PSS of 1 idle kernel: {kernel['pss']:.1f} MiB "
                  f"(100 kernels would be about {kernel['pss'] * 100 / 1024:.1f} GiB)")
    print("load average (1, 5, 15 min): " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
