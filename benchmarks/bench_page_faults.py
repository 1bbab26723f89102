"""What this machine charges for the kernel work a forked sandbox child is made of: page faults and fork.

    .venv/bin/python benchmarks/bench_page_faults.py [--mib 100]

A sandbox child costs its template's fork, the copy-on-write faults of the pages it writes and the unmapping at
its exit (`perf` on the template and children: mostly these, not Python). Their price depends on the host far
more than on this code (nested virtualization multiplies the cost of a fault), so this prints them for this
machine: first-touch and copy-on-write faults per page of anonymous memory, and fork+exit+wait of a process
that holds `--mib` MiB, beside Python's own loop over the same pages without faults (the loop's share).
Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import mmap
import os
import time

PAGE = mmap.PAGESIZE


def touch(memory: mmap.mmap, pages: int, value: int) -> float:
    started = time.perf_counter()
    for i in range(pages):
        memory[i * PAGE] = value
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--forks", type=int, default=100)
    args = parser.parse_args()
    pages = args.mib * 2**20 // PAGE
    memory = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(memory, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages, as most of a Python heap
    first = touch(memory, pages, 1)
    loop = touch(memory, pages, 2)  # no fault now: the loop alone
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        cow = touch(memory, pages, 3)
        os.write(write, repr(cow).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    cow = float(os.read(read, 64))
    started = time.perf_counter()
    for _ in range(args.forks):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    fork_ms = (time.perf_counter() - started) * 1000 / args.forks
    per_page = lambda seconds: (seconds - loop) / pages * 1e6  # noqa: E731
    print(f"anonymous memory, {pages} pages of {PAGE} B: first-touch fault {per_page(first):.2f} us/page, "
          f"copy-on-write fault after fork {per_page(cow):.2f} us/page (Python's loop alone: "
          f"{loop / pages * 1e6:.2f} us/page, subtracted)")
    print(f"fork + exit + wait of a process holding {args.mib} MiB: {fork_ms:.2f} ms (over {args.forks})")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
