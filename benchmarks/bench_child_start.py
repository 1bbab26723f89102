"""What a new child costs, step by step, from each template: the CPU and copy-on-write faults of its fork, its
confinement and its first cell, beside a bare interpreter's fork in the same run.

    .venv/bin/python benchmarks/bench_child_start.py [--children 300]

Runs each measurement in a fresh interpreter started as the supervisor starts a template (its environment only
`supervisor.template_env()`), prepared as a lean or a warm template (`child.prepare`), with the template's
environment fixed, the Landlock base rules opened and the seccomp filter attached (children inherit it, as from a
template); then, per child: fork, then `_exit` at once ("fork"), or after `isolation.apply` ("confine"), or after
`child.serve` ran its warm-up and one `print(3*3)` cell ("first cell"). Each child's CPU and minor faults come from
`wait4`; the parent's CPU per child (its fork, and this harness's directory and pipes for the child) from its own
clock. A child's cost is mostly first writes to pages it shares with its template (every object Python touches), so
the faults are the figure to watch. No supervisor, no server: `bench_server.py` measures those. Figures only, no
assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

STAGES = ("fork", "confine", "first cell")

# Run in the measuring interpreter: argv = template kind ("bare", "lean", "warm"), stage, children.
MEASURE = r"""
import fcntl, gc, json, os, shutil, struct, sys, tempfile, time
kind, stage, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind != "bare":
    from local_code_interpreter.sandbox import child, isolation, landlock
    from local_code_interpreter.sandbox.types import Limits
    child.prepare(lean=kind == "lean")
    isolation.fix_environment(child.BLAS_THREAD_ENV if kind == "lean" else None)
    abi = landlock.abi_version()
    rules = [(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000), access) for fd, access in isolation.landlock_rules(abi)]
    from local_code_interpreter.sandbox.template import _filter_children
    filtered = _filter_children(0)[0]  # the children's seccomp filter on this process, inherited, as a template does
gc.freeze()
body = json.dumps({"code": "print(3*3)"}).encode()
cpu = faults = 0.0
template = time.process_time()
for _ in range(count):
    scratch = tempfile.mkdtemp()
    os.chmod(scratch, 0o777)
    directory = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    cells_r, cells_w = os.pipe()
    results_r, results_w = os.pipe()
    os.write(cells_w, struct.pack("!I", len(body)) + body)
    os.close(cells_w)
    ruleset = landlock.ruleset(abi, rules, directory) if kind != "bare" and abi > 0 else -1
    pid = os.fork()
    if pid == 0:
        if stage == "fork":
            os._exit(0)
        null = os.open("/dev/null", os.O_WRONLY)
        for fd, target in ((cells_r, 3), (results_w, 4), (null, 1), (null, 2), (directory, 900)):
            os.dup2(fd, target)
        isolation.apply(900, Limits(), os.dup2(ruleset, 901) if ruleset >= 0 else -1, 100000, (1 << 40, 1 << 40),
                        True, os.getppid(), filter_inherited=filtered)
        os._exit(0 if stage == "confine" else child.serve(3, 4))
    for fd in (cells_r, results_w, directory, *([ruleset] if ruleset >= 0 else [])):
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    os.close(results_r)
    shutil.rmtree(scratch)
    cpu += usage.ru_utime + usage.ru_stime
    faults += usage.ru_minflt
print(json.dumps({"child_ms": cpu / count * 1000, "faults": faults / count,
                  "template_ms": (time.process_time() - template) / count * 1000}))
"""


def measure(kind: str, stage: str, children: int) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    from local_code_interpreter.sandbox.supervisor import template_env

    done = subprocess.run([sys.executable, "-s", "-P", "-X", "utf8", "-c", MEASURE, kind, stage, str(children)],
                          env=template_env(), cwd="/", capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {stage} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=300)
    args = parser.parse_args()
    bare = measure("bare", "fork", args.children)
    print(f"bare interpreter, fork and exit: child {bare['child_ms']:.2f} ms CPU, {bare['faults']:.0f} faults; "
          f"parent {bare['template_ms']:.2f} ms")
    for kind in ("lean", "warm"):
        for stage in STAGES:
            row = measure(kind, stage, args.children)
            print(f"{kind} template, {stage:>10}: child {row['child_ms']:.2f} ms CPU, {row['faults']:4.0f} faults; "
                  f"parent {row['template_ms']:.2f} ms", flush=True)
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
