"""The serving path under a long run, run as a pod runs it: one server process answering request after request.

    .venv/bin/python benchmarks/bench_server.py [--requests 10000] [--concurrent 800] [--kernel-runs 300]
                                                 [--spaced 500] [--pause 20] [--path /v1/responses]
                                                 [--uptime-rounds 4] [--no-kernel] [--env K=V ...]

Starts `local-code-interpreter --devui` (embedded default: `print(i*3)` runs as-is through the agent and the
`execute_code` tool) on a free loopback port, sends `--requests` sequential non-streaming `/v1/responses` requests
with one keep-alive HTTP connection, then `--uptime-rounds` rounds alternating with a fresh server's (each server
once per round; 16 resolve about 0.1 ms of server CPU per request here), then `--spaced` more one every
`--pause` ms (below saturation), then a thousand back to back on the standard library's `http.client` (latency
without httpx's own CPU), a thousand streamed (until the call's `interpreting` event, and until
`response.completed`), then `--concurrent` requests from 4 concurrent callers (httpx, a thread each; then again from
4 processes on the standard library's `http.client`, a load generator that leaves the server more of the 2 CPUs;
then for `--concurrent`/200 seconds from 4 connections of wrk, a C load generator, where it is installed).
Prints, for the first and the last thousand requests: p50/p95 latency, the server's CPU per request (user+system of
the server process, from /proc) and its log bytes per request; every thousand requests, the server's RSS, open
descriptors and threads and the sandbox's PSS (the template and every live session child); the CPU per request of
the server, the sandbox, this client and the whole machine over all of them, and the rate that caps on this
machine's CPUs; the server beside a fresh one in alternating rounds (what uptime costs, the machine's drift taken
out); the spaced requests' p50/p95 beside `GET /health` back to back and spaced alike (what waking idle processes
costs on this machine), and the `http.client` ones'; the 4-caller throughput and the server's CPU per request under
it (and the callers' own, for the processes); the same within conversations (one conversation's server CPU split by
the length of the history each turn sends: short, and at its 200-message cap); beside a Jupyter kernel's execute
round trip for the same program (benchmarks/jupyter_kernel.py), back to back and spaced alike, measured in the same
run; then the load average. First, how fast this machine runs a plain Python loop: the figures scale with it between
machines.
Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import jupyter_kernel  # noqa: E402  (the baseline, measured in the same run)

CALLERS = 4
WINDOW = 1000
FRESH_FILL, UPTIME_ROUNDS = 1100, 4  # past the 1,000 conversations kept by default; rounds of each server
SHORT_CONVERSATIONS, SHORT_TURNS, CAPPED = 20, 10, 50  # short histories; the turn from which the history is capped
_SCRUB = ("AZURE_", "OPENAI_", "DEVUI_AUTH_TOKEN", "LCI_", "OTEL_", "APPLICATIONINSIGHTS_", "ENABLE_")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def footprint(pid: int) -> tuple[float, int, int, float]:
    """The server's RSS (MiB), open descriptors and threads, and the PSS (MiB) of its sandbox processes: the
    template and every live child of it (spare or session); a back end without processes has none."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    rss = int(status["VmRSS"].split()[0]) / 1024
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    pss = 0
    for child in _children(pid):
        for sandbox_pid in [child, *_children(child)]:
            try:
                with open(f"/proc/{sandbox_pid}/smaps_rollup") as f:
                    pss += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            except (OSError, StopIteration):
                pass  # exited meanwhile
    return rss, descriptors, int(status["Threads"]), pss / 1024


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (every process and the kernel), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU of one process; with `reaped`, also of the children it has waited for (the template's:
    the sandbox's cost). The server's own figure leaves them out."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15 if reaped else 13]) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, extra_env: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        env.update(extra_env)
        self.log = tempfile.NamedTemporaryFile(prefix="lci-bench-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_code_interpreter", "--devui", "--no-browser", "--host", "127.0.0.1",
             "--port", str(self.port)], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {open(self.log.name).read()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become healthy")
            time.sleep(0.05)

    def log_bytes(self) -> int:
        return os.path.getsize(self.log.name)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def cpu_exact(self) -> float:
        """The same to the nanosecond (the scheduler's run time of each thread, /proc/PID/task/*/schedstat): for
        spans of a few requests, where /proc/PID/stat's clock ticks (10 ms) would drown the figure."""
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            try:
                with open(f"/proc/{self.process.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                continue  # a thread that ended meanwhile
        return total / 1e9

    def footprint(self) -> tuple[float, int, int, float]:
        return footprint(self.process.pid)

    def sandbox_cpu(self) -> float:
        """CPU of the server's child processes (the sandbox template), with every child they have reaped."""
        total = 0.0
        for pid in _children(self.process.pid):
            try:
                total += cpu_seconds(pid, reaped=True)
            except OSError:
                continue  # exited meanwhile
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.unlink(self.log.name)


def request(client: httpx.Client, path: str, i: int) -> float:
    started = time.perf_counter()
    answer = client.post(path, json={"model": "local-code-interpreter", "input": f"print({i}*3)"})
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200 or str(i * 3) not in answer.text:
        raise SystemExit(f"request {i}: {answer.status_code} {answer.text[:500]}")
    return elapsed


def streamed(client: httpx.Client, path: str, i: int) -> tuple[float, float]:
    """One streamed new conversation: ms until the call shows running (its `interpreting` event), and until
    `response.completed`."""
    started = time.perf_counter()
    running = whole = None
    body = {"model": "local-code-interpreter", "input": f"print({i}*3)", "stream": True}
    with client.stream("POST", path, json=body) as answer:
        for line in answer.iter_lines():
            if line == "event: response.code_interpreter_call.interpreting":
                running = (time.perf_counter() - started) * 1000
            elif line == "event: response.completed":
                whole = (time.perf_counter() - started) * 1000
    assert running is not None and whole is not None and answer.status_code == 200
    return running, whole


def health(client: httpx.Client) -> float:
    started = time.perf_counter()
    answer = client.get("/health")
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"/health: {answer.status_code} {answer.text[:500]}")
    return elapsed


def turn(client: httpx.Client, path: str, i: int, previous: str | None) -> tuple[float, str]:
    """One turn of a conversation (`previous_response_id`): the code runs in the conversation's live session."""
    body = {"model": "local-code-interpreter", "input": f"print({i}*3)"}
    if previous:
        body["previous_response_id"] = previous
    started = time.perf_counter()
    answer = client.post(path, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200 or str(i * 3) not in answer.text:
        raise SystemExit(f"turn {i}: {answer.status_code} {answer.text[:500]}")
    return elapsed, answer.json()["id"]


def conversation(base: str, path: str, turns: int, offset: int = 0) -> list[float]:
    return continued(base, path, turns, offset)[0]


def continued(base: str, path: str, turns: int, offset: int = 0,
              previous: str | None = None) -> tuple[list[float], str | None]:
    """`turns` turns of one conversation, continuing `previous` if given; (times, the last response id)."""
    times = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(turns):
            elapsed, previous = turn(client, path, offset + i, previous)
            times.append(elapsed)
    return times, previous


def concurrently(server: "Server", targets: list) -> tuple[float, float]:
    """Run each zero-argument target on its own thread; (wall seconds, server CPU seconds) for all of them."""
    cpu0, started = server.cpu(), time.perf_counter()
    threads = [threading.Thread(target=target) for target in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, server.cpu() - cpu0


def lean_caller(job: tuple[int, str, int, int]) -> float:
    """One caller in a process of its own, on the standard library's HTTP client (one keep-alive connection):
    `count` new conversations from index `first`. Returns its CPU seconds. httpx on a thread costs about three
    times the CPU per request, and on 2 CPUs what the load generator burns the server does not get."""
    return lean_requests(*job)[1]


def lean_requests(port: int, path: str, first: int, count: int) -> tuple[list[float], float]:
    """`count` new conversations from index `first` on `http.client` (one keep-alive connection), one after
    another: (each one's latency in ms, this process's CPU seconds for all of them)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    cpu0 = _own_cpu()
    for i in range(first, first + count):
        started = time.perf_counter()
        connection.request("POST", path, json.dumps({"model": "local-code-interpreter", "input": f"print({i}*3)"}),
                           {"content-type": "application/json"})
        answer = connection.getresponse()
        text = answer.read()
        times.append((time.perf_counter() - started) * 1000)
        if answer.status != 200 or str(i * 3).encode() not in text:
            raise SystemExit(f"request {i}: {answer.status} {text[:500]!r}")
    connection.close()
    return times, _own_cpu() - cpu0


def lean_callers(server: "Server", path: str, total: int, first: int) -> tuple[float, float, float]:
    """`total` new conversations from `CALLERS` processes at once (`lean_caller`): (wall seconds, server CPU
    seconds, the callers' CPU seconds). The processes start before the clock does."""
    share = total // CALLERS
    with multiprocessing.get_context("fork").Pool(CALLERS) as pool:
        pool.map(_nothing, range(CALLERS), chunksize=1)  # every worker is up
        cpu0, started = server.cpu(), time.perf_counter()
        spent = pool.map(lean_caller, [(server.port, path, first + k * share, share) for k in range(CALLERS)],
                         chunksize=1)
        return time.perf_counter() - started, server.cpu() - cpu0, sum(spent)


def uptime_against_fresh(server: "Server", path: str, env: dict[str, str], window: int, served: int,
                         uptime_rounds: int = UPTIME_ROUNDS) -> None:
    """What uptime costs, with this machine's drift taken out: the long-lived server beside a fresh one (same
    environment) past its fill-up (`FRESH_FILL` requests: its conversation store and sessions full, as the
    long-lived one's are), in alternating rounds of `window // 2` new conversations on `http.client`, in the order
    AB BA AB BA (a machine speeding up or slowing down within a pair favours neither). The figures per thousand
    above move with the machine within a run (here by up to a third between minutes); two servers measured in the
    same minutes move together, so their difference is what the served requests left behind."""
    fresh = Server(env)
    try:
        lean_requests(fresh.port, path, 100000, FRESH_FILL)
        size = max(1, window // 2)
        rounds: dict[str, list[tuple[float, float]]] = {"long-lived": [], "fresh": []}  # (CPU ms/req, p50 ms)
        for k in range(uptime_rounds * 2):  # in the order AB BA AB BA: neither server gains by going second
            name, target = (("long-lived", server), ("fresh", fresh))[(k + k // 2) % 2]
            cpu0 = target.cpu_exact()
            times, _ = lean_requests(target.port, path, 110000 + k * size, size)
            rounds[name].append(((target.cpu_exact() - cpu0) * 1000 / size, statistics.median(times)))
    finally:
        fresh.stop()
    print(f"uptime: the server after {served} requests beside a fresh one past its first {FRESH_FILL}, "
          f"{uptime_rounds} rounds of {size} each on http.client, in the order AB BA AB BA:")
    for name, figures in rounds.items():
        print(f"  {name:<11} server CPU ms/req " + " ".join(f"{cpu:.2f}" for cpu, _ in figures)
              + "; p50 ms " + " ".join(f"{p50:.2f}" for _, p50 in figures))
    gap = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(rounds["long-lived"], rounds["fresh"])]
    print(f"  long-lived minus fresh, mean of the rounds: server CPU {statistics.mean(g[0] for g in gap):+.2f} "
          f"ms/req, p50 {statistics.mean(g[1] for g in gap):+.2f} ms")


# wrk's script: each request a new conversation (`print(i*3)` from index `first`, a command-line argument), each
# answer checked for a completed run, the count of those without one printed with wrk's figures as JSON at the end.
WRK_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counter = tonumber(args[1]); failed = 0 end
function request()
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    '{"model":"local-code-interpreter","input":"print(' .. counter .. '*3)"}')
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, "[exit code 0;", 1, true) then failed = failed + 1 end
end
function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("failed") end
  local e = summary.errors
  io.write(string.format('{"requests":%d,"seconds":%.6f,"failed":%d,"errors":%d,"p50":%.3f,"p99":%.3f}\n',
    summary.requests, summary.duration / 1e6, failed, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk_callers(server: "Server", path: str, seconds: float, first: int) -> dict | None:
    """`CALLERS` connections of wrk (a C load generator: one thread, one request at a time on each connection) sending
    new conversations for `seconds`: its JSON summary plus the server's and wrk's CPU seconds; None without wrk
    (Debian: `apt-get install wrk`). The callers of a pod are on other machines; this one costs this machine least."""
    if not shutil.which("wrk"):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = server.cpu()
        done = subprocess.run(["wrk", "-t1", f"-c{CALLERS}", f"-d{seconds:.0f}s", "--timeout", "60s", "-s",
                               script.name, f"{server.base}{path}", "--", str(first)],
                              capture_output=True, text=True, check=False)
        cpu = server.cpu() - cpu0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    if not last or not last[0].startswith("{"):
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    summary = json.loads(last[0])
    summary["server_cpu"] = cpu
    summary["wrk_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return summary


LOOP = 10_000_000


def loop_seconds() -> float:
    """This process's CPU seconds for `LOOP` additions in a plain loop: how fast this machine runs the interpreter,
    so that runs on different machines compare (a Jupyter kernel's p50 here was 2.96 ms on one machine of this
    kind and 5.9-7.3 ms on another, a week later)."""
    started, total = time.process_time(), 0
    for i in range(LOOP):
        total += i
    return time.process_time() - started


def _nothing(_: int) -> None:
    return None


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrent", type=int, default=800)
    parser.add_argument("--kernel-runs", type=int, default=300)
    parser.add_argument("--spaced", type=int, default=500, help="requests sent spaced, after the sequential ones")
    parser.add_argument("--pause", type=float, default=20.0, help="milliseconds between the spaced requests")
    parser.add_argument("--path", default="/v1/responses")
    parser.add_argument("--uptime-rounds", type=int, default=UPTIME_ROUNDS,
                        help="rounds of the long-lived server beside a fresh one (each server once a round)")
    parser.add_argument("--no-kernel", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="extra server environment, K=V")
    args = parser.parse_args()
    window = min(WINDOW, max(1, args.requests // 3))

    print(f"this machine: a plain Python loop of {LOOP:,} additions took {loop_seconds():.2f} s of CPU "
          f"(how fast this machine runs the interpreter: between machines, the figures below move with it)")
    extra_env = dict(item.split("=", 1) for item in args.env)
    server = Server(extra_env)
    try:
        times: list[float] = []
        marks = []  # (request index, cpu seconds, log bytes) at the window edges
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for i in range(5):  # warm: first imports, first sandbox child
                request(client, args.path, i)
            steps = []  # (request index, cpu seconds) every `window` requests: the trend, not just the ends
            sizes = []  # server.footprint() at the same edges
            costs = (server.cpu(), server.sandbox_cpu(), _own_cpu(), machine_cpu_seconds())
            for i in range(args.requests):
                if i in (0, window, args.requests - window):
                    marks.append((i, server.cpu(), server.log_bytes()))
                if i % window == 0:
                    steps.append((i, server.cpu()))
                    sizes.append(server.footprint())
                times.append(request(client, args.path, i))
            marks.append((args.requests, server.cpu(), server.log_bytes()))
            steps.append((args.requests, server.cpu()))
            sizes.append(server.footprint())
            costs = [(after - before) * 1000 / args.requests for before, after in zip(
                costs, (server.cpu(), server.sandbox_cpu(), _own_cpu(), machine_cpu_seconds()))]
        first, last = times[:window], times[-window:]
        (a, ca, la), (b, cb, lb), (c, cc, lc), (d, cd, ld) = marks
        print(f"server: {args.path} print(i*3), {args.requests} sequential requests, one keep-alive connection")
        print(f"{'window':<22}{'p50 ms':>9}{'p95 ms':>9}{'CPU ms/req':>12}{'log B/req':>11}")
        print(f"{f'first {window}':<22}{statistics.median(first):>9.2f}{pct(first, 95):>9.2f}"
              f"{(cb - ca) * 1000 / (b - a):>12.2f}{(lb - la) / (b - a):>11.0f}")
        print(f"{f'last {window}':<22}{statistics.median(last):>9.2f}{pct(last, 95):>9.2f}"
              f"{(cd - cc) * 1000 / (d - c):>12.2f}{(ld - lc) / (d - c):>11.0f}")
        print(f"server CPU ms/req per {window}: " + " ".join(
            f"{(c2 - c1) * 1000 / (i2 - i1):.2f}" for (i1, c1), (i2, c2) in zip(steps, steps[1:])))
        print(f"p50 ms per {window}: " + " ".join(
            f"{statistics.median(times[k:k + window]):.2f}" for k in range(0, len(times) - window + 1, window)))
        print(f"server RSS MiB every {window}: " + " ".join(f"{size[0]:.0f}" for size in sizes))
        print(f"sandbox PSS MiB every {window} (template and live children): " + " ".join(
            f"{size[3]:.0f}" for size in sizes))
        print(f"server descriptors / threads every {window}: " + " ".join(f"{size[1]}/{size[2]}" for size in sizes))
        cpus = os.cpu_count() or 1
        print(f"CPU per request, all {args.requests}: server {costs[0]:.2f} ms, sandbox {costs[1]:.2f} ms (template "
              f"and the children it reaped), this client {costs[2]:.2f} ms, whole machine {costs[3]:.2f} ms: "
              f"{cpus} CPUs serve at most {cpus * 1000 / costs[3]:.0f} such requests per second")

        uptime_against_fresh(server, args.path, extra_env, window, args.requests, args.uptime_rounds)

        # The same requests arriving spaced (one every --pause ms, a replica below saturation): the spare
        # children are refilled between requests, so this is the latency a caller sees when the CPU is not the limit.
        spaced = []
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for i in range(args.spaced):
                time.sleep(args.pause / 1000)
                spaced.append(request(client, args.path, 50000 + i))
        if spaced:
            print(f"new conversation every {args.pause:g} ms, {len(spaced)} requests: "
                  f"p50 {statistics.median(spaced):.2f} ms, p95 {pct(spaced, 95):.2f} ms")
            # What waking an idle process costs on this machine (a virtual CPU that halted must be woken), measured
            # on the same server with a request that does nothing: the part of the spaced figure no code here sets.
            with httpx.Client(base_url=server.base, timeout=60) as client:
                close = [health(client) for _ in range(args.spaced)]
                apart = []
                for _ in range(args.spaced):
                    time.sleep(args.pause / 1000)
                    apart.append(health(client))
            woken = statistics.median(apart) - statistics.median(close)
            print(f"GET /health back to back p50 {statistics.median(close):.2f} ms, one every {args.pause:g} ms p50 "
                  f"{statistics.median(apart):.2f} ms (waking idle processes: {woken:.2f} ms)")
        # The sequential figures above include httpx's own CPU (about 1 ms per request here, on the same 2 CPUs):
        # the same requests from the standard library's client show what a lighter caller sees.
        lean, lean_cpu = lean_requests(server.port, args.path, 70000, window)
        print(f"new conversation back to back on http.client, {window} requests: p50 {statistics.median(lean):.2f} "
              f"ms, p95 {pct(lean, 95):.2f} ms, this client's CPU {lean_cpu * 1000 / window:.2f} ms/req")
        # Streamed, as a UI reads it: the call shows running (http/tool_stream.py) before its result is in.
        cpu0 = server.cpu_exact()
        with httpx.Client(base_url=server.base, timeout=60) as client:
            marks = [streamed(client, args.path, 80000 + i) for i in range(window)]
        cpu = server.cpu_exact() - cpu0
        print(f"streamed new conversation back to back, {window} requests: p50 to the call's `interpreting` "
              f"{statistics.median(m[0] for m in marks):.2f} ms, to `response.completed` "
              f"{statistics.median(m[1] for m in marks):.2f} ms, server CPU {cpu * 1000 / window:.2f} ms/req")

        done = 0
        lock = threading.Lock()

        def caller(k: int) -> None:
            nonlocal done
            with httpx.Client(base_url=server.base, timeout=60) as client:
                while True:
                    with lock:
                        if done >= args.concurrent:
                            return
                        done += 1
                        i = done
                    request(client, args.path, 100000 + i * CALLERS + k)

        wall, cpu = concurrently(server, [lambda k=k: caller(k) for k in range(CALLERS)])
        print(f"{CALLERS} callers: {args.concurrent / wall:.0f} exec/s over {args.concurrent} requests, "
              f"server CPU {cpu * 1000 / args.concurrent:.2f} ms/req")
        wall, cpu, callers = lean_callers(server, args.path, args.concurrent, 200000)
        print(f"{CALLERS} callers, a process each on http.client: {args.concurrent / wall:.0f} exec/s over "
              f"{args.concurrent} requests, server CPU {cpu * 1000 / args.concurrent:.2f} ms/req, callers' CPU "
              f"{callers * 1000 / args.concurrent:.2f} ms/req")
        summary = wrk_callers(server, args.path, max(3.0, args.concurrent / 200), 300000)
        if summary is None:
            print(f"{CALLERS} callers on wrk: wrk is not installed (Debian: apt-get install wrk)")
        else:
            n = summary["requests"]
            print(f"{CALLERS} callers, connections of wrk (C, one thread): {n / summary['seconds']:.0f} exec/s over "
                  f"{n} requests, p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms, server CPU "
                  f"{summary['server_cpu'] * 1000 / n:.2f} ms/req, wrk's CPU {summary['wrk_cpu'] * 1000 / n:.2f} "
                  f"ms/req, answers without a completed run {summary['failed']}, socket errors {summary['errors']}")
        print("(each request above starts a conversation, so each pays a new sandbox session and, once the replica "
              "is full, the eviction of the least recently used one)")

        # Within conversations, as an agent works: every turn continues the previous one in its live session.
        turns = max(30, args.concurrent // CALLERS)
        conversation(server.base, args.path, 20, 900000)  # warm
        cpu0 = server.cpu_exact()
        head, previous = continued(server.base, args.path, CAPPED, 1000000)
        cpu1 = server.cpu_exact()
        capped, _ = continued(server.base, args.path, max(1, turns * CALLERS - CAPPED), 1000000 + CAPPED, previous)
        cpu2 = server.cpu_exact()
        chain = head + capped
        print(f"one conversation, {len(chain)} turns: p50 {statistics.median(chain):.2f} ms, p95 {pct(chain, 95):.2f} "
              f"ms, server CPU {(cpu2 - cpu0) * 1000 / len(chain):.2f} ms/req")
        # What the history costs: each turn keeps 4 messages (the input, the tool call, its result, the answer), so
        # from turn 50 on every turn sends the model the default cap of 200. Against that, turns 2 to 11 of fresh
        # conversations (under 44 messages; each conversation's first turn opens its session and is left out).
        shorts, short_cpu = [], 0.0
        for k in range(SHORT_CONVERSATIONS):
            _, opened = continued(server.base, args.path, 1, 3000000 + k * 100)
            before = server.cpu_exact()
            times, _ = continued(server.base, args.path, SHORT_TURNS, 3000001 + k * 100, opened)
            short_cpu += server.cpu_exact() - before
            shorts += times
        print(f"  by history length: turns 2-{SHORT_TURNS + 1} of {SHORT_CONVERSATIONS} conversations p50 "
              f"{statistics.median(shorts):.2f} ms, server CPU {short_cpu * 1000 / len(shorts):.2f} ms/req; the turns "
              f"above from turn {CAPPED + 1} (200 messages) p50 {statistics.median(capped):.2f} ms, server CPU "
              f"{(cpu2 - cpu1) * 1000 / len(capped):.2f} ms/req")
        wall, cpu = concurrently(server, [lambda k=k: conversation(server.base, args.path, turns, 2000000 + k * turns)
                                          for k in range(CALLERS)])
        print(f"{CALLERS} callers, one conversation each: {turns * CALLERS / wall:.0f} exec/s over {turns * CALLERS} "
              f"turns, server CPU {cpu * 1000 / (turns * CALLERS):.2f} ms/req")
    finally:
        server.stop()

    if not args.no_kernel:
        with jupyter_kernel.kernel() as kc:
            jupyter_kernel.round_trips_ms(kc, "print({i}*3)", 20)
            ktimes = jupyter_kernel.round_trips_ms(kc, "print({i}*3)", args.kernel_runs)
            kspaced = (jupyter_kernel.round_trips_ms(kc, "print({i}*3)", args.kernel_runs, args.pause)
                       if args.spaced else [])
        print(f"jupyter kernel execute print(i*3): p50 {statistics.median(ktimes):.2f} ms, "
              f"p95 {pct(ktimes, 95):.2f} ms over {args.kernel_runs}")
        if kspaced:
            print(f"jupyter kernel execute, one every {args.pause:g} ms: p50 {statistics.median(kspaced):.2f} ms, "
                  f"p95 {pct(kspaced, 95):.2f} ms over {args.kernel_runs}")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
