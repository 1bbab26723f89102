"""Server CPU per request of this tree beside another commit's, interleaved in the same run: on a noisy machine
(the same command varies by ±15 % from run to run) only alternating rounds compare two versions fairly.

    .venv/bin/python benchmarks/bench_ab.py REF [--rounds 3] [--requests 2000] [--mode new|turns|short|spaced|both]
                                                [--pause 30] [--old-env K=V ...] [--new-env K=V ...]

REF is any git commit of this repository (for example the last release tag, or `HEAD~5`); it is checked out in a
temporary worktree and its server runs with that tree first on PYTHONPATH (the venv's packages are shared). Its
sandbox templates run that tree's code too (`supervisor.template_env`), for commits from the one that made them
do so on; before it, both servers forked this tree's template and children, so only the server figures compare.
Each round starts the old and then the new server (`bench_server.Server`), sends `--requests` sequential
`/v1/responses` `print(i*3)` requests on one keep-alive connection after 100 to warm up, and prints the server
process's user+system CPU per request, the sandbox's (its templates and the children they reaped; children still
alive at the end, the replica's sessions, are not counted), the wall time per request, and the p50 and p90 latency
(a spare that ran out, so a fork on the request's path, shows in the second): `new` mode starts a conversation with
each request (a new sandbox session each), `turns` continues one conversation (its live session; the history kept
up to the bound), `short` runs conversations of `bench_server.SHORT_TURNS` turns each (short histories, as most
conversations are), `spaced` starts a conversation with each request but sends one every `--pause` ms (a replica
below saturation: the latency a caller sees when the CPU is not the limit; a fifth of `--requests`).
`--old-env`/`--new-env` give one side settings of its own: `HEAD --old-env LCI_EVENT_LOOP=asyncio` compares the
event loops on the same code. Then the means, and the load average. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_server  # noqa: E402  (one server harness for every benchmark)


def measure(mode: str, requests: int, pythonpath: str | None,
            pause: float = 0.03, env: dict[str, str] | None = None) -> tuple[float, ...]:
    """(server CPU ms per request, sandbox CPU ms per request, wall ms per request, p50 ms, p90 ms) for one server
    run."""
    saved = os.environ.get("PYTHONPATH")
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        server = bench_server.Server(env or {})
    finally:
        if pythonpath:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    try:
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for i in range(100):
                bench_server.request(client, "/v1/responses", i)
        if mode == "spaced":
            requests = max(1, requests // 5)
        cpu0, sandbox0, started = server.cpu(), server.sandbox_cpu(), time.perf_counter()
        if mode in ("new", "spaced"):
            times = []
            with httpx.Client(base_url=server.base, timeout=60) as client:
                for i in range(requests):
                    if mode == "spaced":
                        time.sleep(pause)
                    times.append(bench_server.request(client, "/v1/responses", i))
        elif mode == "short":
            times = []
            for first in range(0, requests, bench_server.SHORT_TURNS):
                times += bench_server.conversation(server.base, "/v1/responses",
                                                   min(bench_server.SHORT_TURNS, requests - first), 1000 + first)
        else:
            times = bench_server.conversation(server.base, "/v1/responses", requests, 1000)
        wall = (time.perf_counter() - started) * 1000 / requests
        return ((server.cpu() - cpu0) * 1000 / requests, (server.sandbox_cpu() - sandbox0) * 1000 / requests, wall,
                statistics.median(times), statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0])
    finally:
        server.stop()


def _figures(row: tuple[float, ...]) -> str:
    cpu, sandbox, wall, p50, p90 = row
    return (f"server CPU {cpu:.2f} ms/req, sandbox CPU {sandbox:.2f} ms/req, wall {wall:.2f} ms/req, "
            f"p50 {p50:.2f} ms, p90 {p90:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--mode", choices=("new", "turns", "short", "spaced", "both"), default="both")
    parser.add_argument("--pause", type=float, default=30.0, help="milliseconds between spaced requests")
    parser.add_argument("--old-env", action="append", default=[], metavar="K=V",
                        help="a setting for REF's server only (e.g. LCI_EVENT_LOOP=asyncio); repeatable")
    parser.add_argument("--new-env", action="append", default=[], metavar="K=V",
                        help="a setting for this tree's server only; repeatable")
    args = parser.parse_args()
    envs = {"old": dict(item.split("=", 1) for item in args.old_env),
            "new": dict(item.split("=", 1) for item in args.new_env)}
    modes = ("new", "turns", "short", "spaced") if args.mode == "both" else (args.mode,)
    worktree = tempfile.mkdtemp(prefix="lci-bench-ab-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--force", worktree, args.ref], check=True,
                   capture_output=True)
    try:
        for mode in modes:
            figures: dict[str, list[tuple[float, ...]]] = {"old": [], "new": []}
            for n in range(args.rounds):
                for name, path in (("old", os.path.join(worktree, "src")), ("new", None)):
                    row = measure(mode, args.requests, path, args.pause / 1000, envs[name])
                    figures[name].append(row)
                    print(f"{mode} round {n + 1} {name:>3} ({args.ref if name == 'old' else 'this tree'}): "
                          + _figures(row), flush=True)
            for name in ("old", "new"):
                mean = tuple(statistics.mean(row[k] for row in figures[name]) for k in range(5))
                print(f"{mode} {name:>3} mean: " + _figures(mean))
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", worktree], capture_output=True)
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
