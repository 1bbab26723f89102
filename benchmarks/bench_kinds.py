"""Where the server's CPU goes, by what a request asks for: the server process's CPU per request for requests that
stop at different depths of the serving path, in the same run.

    .venv/bin/python benchmarks/bench_kinds.py [--requests 2000] [--rounds 2]

Starts `local-code-interpreter --devui` (`bench_server.Server`) on the subprocess back end, then again on monty (an
in-process interpreter: no process per session), and sends from one `http.client` connection, after 300 to warm
up, `--requests` each of:
- `GET /health`: HTTP and the shared guard alone;
- a `/v1/responses` refused at its input (a `function_call_output` with no call: 400): that plus reading, parsing
  and checking the request;
- new conversations (`print(i*3)`, the issue's request): the whole agent path, and on subprocess a new sandbox
  session each (a spare child taken and replaced, the least recently used session evicted once the replica is
  full);
- turns of conversations of ten (`previous_response_id`): the agent path in a live session.
Prints the server's user+system CPU per request of each (from /proc; the clock tick is 10 ms, so about 5 us of
resolution at 2,000 requests), per round, and the load average. The difference between a new conversation on
subprocess and one on monty, or a turn, is what a new sandbox session costs the server. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_server  # noqa: E402  (one server harness for every benchmark)

KINDS = ("health", "refused input", "new conversation", "turns")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(env: dict[str, str], kinds: tuple[str, ...], requests: int) -> dict[str, float]:
    """Server CPU (ms) per request of each kind, one server for all of them."""
    server = bench_server.Server(env)
    try:
        host, port = server.base.split("//")[1].split(":")
        connection = http.client.HTTPConnection(host, int(port))

        def send(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
            connection.request(method, path, body=None if body is None else json.dumps(body),
                               headers={"content-type": "application/json"})
            answer = connection.getresponse()
            return answer.status, answer.read()

        def post(body: dict) -> tuple[int, bytes]:
            return send("POST", "/v1/responses", body)

        for i in range(300):
            post({"input": f"print({i}*3)"})
        figures = {}
        for kind in kinds:
            previous = None
            started = _cpu_seconds(server.process.pid)
            for i in range(requests):
                if kind == "health":
                    (status, _), expected = send("GET", "/health"), 200
                elif kind == "refused input":
                    status, _ = post({"input": [{"type": "function_call_output", "call_id": "x", "output": "1"}]})
                    expected = 400
                else:
                    body = {"input": f"print({i}*3)"}
                    if kind == "turns" and previous and i % 10:
                        body["previous_response_id"] = previous
                    status, data = post(body)
                    expected = 200
                    previous = json.loads(data)["id"]
                if status != expected:
                    raise SystemExit(f"{kind} {i}: {status}")
            time.sleep(0.3)  # background work of the last requests (a refill, an eviction) counts too
            figures[kind] = (_cpu_seconds(server.process.pid) - started) / requests * 1000
        return figures
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"server CPU per request (ms), {args.requests} of each kind, one http.client connection")
    print(f"{'round':>5}  {'back end':10} " + " ".join(f"{kind:>17}" for kind in KINDS))
    for round_ in range(1, args.rounds + 1):
        for backend, env in (("subprocess", {}), ("monty", {"LCI_SANDBOX": "monty"})):
            figures = measure(env, KINDS, args.requests)
            print(f"{round_:>5}  {backend:10} " + " ".join(f"{figures[kind]:17.3f}" for kind in KINDS))
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
