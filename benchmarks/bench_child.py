"""Cost of the confined child's own work per cell (`sandbox/child.py`), without the supervisor.

    .venv/bin/python benchmarks/bench_child.py [--cells 2000] [--charts 20]

Prints, after `prepare()` as the template runs it: the p50/p95 of `run_cell("x += 1")` in-process (compile,
run, figure check, flush, the before/after file snapshots: everything but the pipes), the same over real pipes
to a `python -m local_code_interpreter.sandbox.child` process (frame out, frame back), the capture of one
line chart as PNG (wall and CPU time), and the load average. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

from local_code_interpreter.sandbox import child

HEADER = struct.Struct("!I")


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p50, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {p50 * 1e6:8.1f} µs   p95 {p95 * 1e6:8.1f} µs"


def in_process(cells: int) -> None:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    child.run_cell("x = 0", namespace)
    for label, code in (("x += 1", "x += 1"), ("x (value)", "x")):
        times = []
        for index in range(cells):
            started = time.perf_counter()
            child.run_cell(code, namespace, f"<cell {index}>")
            times.append(time.perf_counter() - started)
        print(f"run_cell {label:<12} in-process        {percentiles(times)}")


def charts(count: int) -> None:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 2, 8])\nplt.title('chart')\nplt.xlabel('x')\nNone"
    draw = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 2, 8])\nplt.title('chart')\nplt.xlabel('x')"
    from local_code_interpreter.sandbox import figures

    walls, cpus, cells, size = [], [], [], 0
    for _ in range(count):
        exec(draw, namespace)  # noqa: S102 - the figure, drawn outside the measured capture
        wall, cpu = time.perf_counter(), time.process_time()
        images = figures.collect()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        size = len(images[0])
        started = time.perf_counter()
        child.run_cell(code, namespace)
        cells.append(time.perf_counter() - started)
    print(f"PNG capture of one line chart ({size} bytes)  wall {percentiles(walls)}")
    print(f"PNG capture of one line chart               CPU  {percentiles(cpus)}")
    print(f"whole chart cell (plot + capture) in-process     {percentiles(cells)}")


def over_pipes(cells: int, workdir: str) -> None:
    cells_r, cells_w = os.pipe()
    results_r, results_w = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "local_code_interpreter.sandbox.child", str(cells_r),
                                str(results_w)], pass_fds=(cells_r, results_w), cwd=workdir,
                               env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    os.close(cells_r)
    os.close(results_w)

    def round_trip(code: str) -> dict:
        body = json.dumps({"code": code}).encode()
        os.write(cells_w, HEADER.pack(len(body)) + body)
        header = os.read(results_r, HEADER.size)
        size, data = HEADER.unpack(header)[0], b""
        while len(data) < size:
            data += os.read(results_r, size - len(data))
        return json.loads(data)

    round_trip("x = 0")
    times = []
    for _ in range(cells):
        started = time.perf_counter()
        round_trip("x += 1")
        times.append(time.perf_counter() - started)
    print(f"run_cell x += 1       over pipes (round trip) {percentiles(times)}")
    os.close(cells_w)
    process.wait()
    os.close(results_r)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--charts", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    missing = child.prepare()
    print(f"prepare() {time.perf_counter() - started:.2f} s (missing warm modules: {missing or 'none'})")
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        for index in range(5):  # a session directory with a few files, as a real one has
            with open(f"file{index}.csv", "w") as f:
                f.write("a,b\n")
        in_process(args.cells)
        charts(args.charts)
        over_pipes(args.cells, workdir)
        os.chdir("/")
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().strip()} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
