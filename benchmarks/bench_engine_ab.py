"""What a new sandbox session costs at the session engine, this tree beside another commit, in alternating rounds.

    .venv/bin/python benchmarks/bench_engine_ab.py REF [--rounds 3] [--sessions 1500]

End to end (`bench_ab.py`) this machine does not resolve differences under about 0.5 ms per request: the same
code against itself differed by 0.17-0.69 ms of server CPU per request in every round of one run. Here there is
no HTTP, no agent and no client: each measurement is a fresh interpreter running `SessionManager.run` on the
subprocess back end (300 new sessions to warm up, then `--sessions` more, `print(i*3)` each, the replica full so
each also ends the least recently used one), and prints this process's CPU per new session (the supervisor's
side) and the sandbox's (its templates and the children they reaped). REF's code runs from a temporary worktree
(first on PYTHONPATH, its templates too: `supervisor.template_env`). The order alternates from round to round.
Run with `TMPDIR=/dev/shm` to leave out the disk's part (`README.md`: this machine's ext4 without a journal).
Then the means, and the load average. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = r"""
import asyncio, os, resource, sys
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load

def tree_cpu(pid):  # the process and the children it reaped
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def main(count):
    settings = load({"sandbox": "subprocess"}, environ={})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
    await sandbox.start()
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    try:
        for i in range(300):
            await sessions.run(("local", f"warm{i}"), f"print({i}*3)")
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            templates = [int(pid) for pid in f.read().split()]
        sandbox0, own0 = sum(map(tree_cpu, templates)), own_cpu()
        for i in range(count):
            await sessions.run(("local", f"c{i}"), f"print({i}*3)")
        print((own_cpu() - own0) / count * 1000, (sum(map(tree_cpu, templates)) - sandbox0) / count * 1000)
    finally:
        await sessions.close_all()
        await sandbox.close()

asyncio.run(main(int(sys.argv[1])))
"""


def measure(sessions: int, pythonpath: str | None) -> tuple[float, float]:
    """(supervisor CPU ms, sandbox CPU ms) per new session, in a fresh interpreter."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", MEASURE, str(sessions)], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the measurement failed: {done.stderr[-2000:]}")
    own, sandbox = done.stdout.split()
    return float(own), float(sandbox)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1500)
    args = parser.parse_args()
    worktree = tempfile.mkdtemp(prefix="lci-bench-engine-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--force", worktree, args.ref], check=True,
                   capture_output=True)
    figures: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    try:
        for n in range(args.rounds):
            sides = [("old", os.path.join(worktree, "src")), ("new", None)]
            for name, path in sides if n % 2 == 0 else sides[::-1]:
                own, sandbox = measure(args.sessions, path)
                figures[name].append((own, sandbox))
                label = args.ref if name == "old" else "this tree"
                print(f"round {n + 1} {name:>3} ({label}): supervisor {own:.3f} ms, sandbox {sandbox:.3f} ms "
                      "per new session", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", worktree], capture_output=True)
    for name in ("old", "new"):
        own = [row[0] for row in figures[name]]
        sandbox = [row[1] for row in figures[name]]
        spread = f" (stdev {statistics.stdev(sandbox):.3f})" if len(sandbox) > 1 else ""
        print(f"{name:>3} mean: supervisor {statistics.mean(own):.3f} ms, sandbox {statistics.mean(sandbox):.3f} ms"
              f"{spread} per new session")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
