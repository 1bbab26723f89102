"""Every benchmark still runs to its figures (slow).

The benchmarks assert nothing and no other test runs them, so one the code moved away from fails only when someone
next reaches for it: `bench_aca.py` stopped at a 401 for weeks once its sessions API needed the guard in front.
Each runs here as its README line says, with counts small enough for seconds, and must end as it does on a real
run: exit status 0 and the line that closes its report. The figures themselves are not looked at (too few runs
to mean anything, on a machine busy with the suite).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")

# script: (its arguments at a smoke test's size, a line its report ends with when it got through)
RUNS = {
    "bench_ab.py": (["HEAD", "--rounds", "1", "--requests", "40", "--mode", "new"], "new new mean:"),
    "bench_aca.py": (["--runs", "20", "--warmup", "4", "--concurrent-runs", "20"], "API overhead p50:"),
    "bench_child.py": (["--cells", "50", "--charts", "2"], "run_cell x += 1       over pipes"),
    "bench_child_start.py": (["--children", "10"], "warm template, first cell:"),
    "bench_engine_ab.py": (["HEAD", "--rounds", "1", "--sessions", "40"], "new mean:"),
    "bench_files.py": (["--runs", "3"], "download 1 MiB (signed link)"),
    "bench_kinds.py": (["--requests", "40", "--rounds", "1"], "monty"),
    "bench_layers.py": (["--requests", "40", "--rounds", "1"], "app - agent - render"),
    "bench_manager.py": (["--runs", "20", "--creates", "4"], "manager overhead on a live run:"),
    "bench_monty.py": (["--runs", "50", "--warmup", "10"], "monty print(1): runs=50"),
    "bench_neighbours.py": (["--cells", "5", "--flooders", "3", "--conversations", "10"], "Alice's state kept"),
    "bench_owners.py": (["--evictions", "50"], "load average"),
    "bench_page_faults.py": (["--mib", "8", "--forks", "5"], "fork + exit + wait of a process holding 8 MiB"),
    "bench_server.py": (["--requests", "150", "--concurrent", "40", "--kernel-runs", "20", "--spaced", "20",
                         "--uptime-rounds", "1"], "jupyter kernel execute, one every 20 ms"),
    "bench_sessions.py": (["--runs", "20", "--creates", "4", "--sessions", "1,2"], "jupyter PSS of 1 idle kernel"),
    "bench_subprocess.py": (["--runs", "20", "--warmup", "5", "--concurrent-runs", "20", "--spawns", "5"],
                            "jupyter execute print(i*3)"),
}
NEEDS_GIT = {"bench_ab.py", "bench_engine_ab.py"}  # they check a commit out beside this tree (git worktree)


def test_every_benchmark_has_a_smoke_run():
    scripts = {name for name in os.listdir(BENCHMARKS) if name.startswith("bench_") and name.endswith(".py")}
    assert scripts == set(RUNS), "add the new benchmark to RUNS (or drop the one that is gone)"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_the_benchmark_runs_to_its_report(script):
    arguments, closing = RUNS[script]
    if script in NEEDS_GIT:
        probe = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "HEAD"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"{script} checks a commit out of this repository, and this tree is not a git checkout: "
                        f"{(probe.stderr or probe.stdout).strip()[:200]}")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AZURE_", "OPENAI_", "LCI_", "DEVUI_"))}
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    report = f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert done.returncode == 0, report
    assert closing in done.stdout, report
