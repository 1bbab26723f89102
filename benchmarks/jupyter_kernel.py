"""The baseline the benchmarks print beside our figures: a Jupyter kernel (`jupyter_client` + `ipykernel`),
started and driven the way a notebook server does it, measured in the same run on the same machine.

    python benchmarks/jupyter_kernel.py            # kernel start, execute round trip, import pandas, a chart
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import contextmanager


@contextmanager
def kernel():
    """A started kernel and a ready blocking client; both shut down afterwards."""
    import tempfile

    from jupyter_client.manager import KernelManager

    # IPC transport (Unix sockets), as a local notebook server could use; TCP would only add latency and warnings.
    manager = KernelManager(kernel_name="python3", transport="ipc",
                            connection_file=tempfile.mktemp(prefix="lci-bench-kernel-", suffix=".json"))
    manager.ip = manager.connection_file.removesuffix(".json")
    manager.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str, timeout: float = 30.0) -> dict:
    """One execute round trip until the kernel is idle again; returns the reply content plus the streams seen."""
    msg_id = client.execute(code, store_history=False)
    streams: list[str] = []
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        if kind == "stream":
            streams.append(message["content"]["text"])
        elif kind == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)["content"]
    reply["streams"] = "".join(streams)
    return reply


def start_ms(runs: int = 3) -> list[float]:
    """Kernel start to first completed execution, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with kernel() as client:
            execute(client, "pass")
            times.append((time.perf_counter() - started) * 1000)
    return times


def round_trips_ms(client, code: str, runs: int, pause_ms: float = 0.0) -> list[float]:
    """Execute round trips, back to back, or one every `pause_ms` (the pause itself is not counted)."""
    times = []
    for i in range(runs):
        if pause_ms:
            time.sleep(pause_ms / 1000)
        started = time.perf_counter()
        execute(client, code.format(i=i))
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    starts = start_ms()
    print(f"jupyter kernel start (to first execute): p50 {statistics.median(starts):.0f} ms over {len(starts)}")
    with kernel() as client:
        for label, code, runs in (("print(i*3)", "print({i}*3)", 300), ("x += 1", "x = globals().get('x', 0) + 1", 300)):
            times = round_trips_ms(client, code, runs)
            print(f"jupyter execute {label}: p50 {statistics.median(times):.2f} ms, p95 {percentile(times, 95):.2f} ms")
        started = time.perf_counter()
        reply = execute(client, "import pandas")
        print(f"jupyter first import pandas: {(time.perf_counter() - started) * 1000:.0f} ms ({reply['status']})")
        chart = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt, io\n"
                 "plt.plot([1, 2, 3]); b = io.BytesIO(); plt.savefig(b, format='png'); plt.close('all'); len(b.getvalue())")
        execute(client, chart)
        times = round_trips_ms(client, chart, 20)
        print(f"jupyter matplotlib chart round trip: p50 {statistics.median(times):.1f} ms")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
