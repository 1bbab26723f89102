"""The sessions API (`/sessions`, the Azure Container Apps code interpreter contract) beside the raw session
engine, in the same run: what HTTP, auth, JSON and the ASGI stack add to one stateful execution.

    .venv/bin/python benchmarks/bench_aca.py [--runs 300] [--warmup 30] [--concurrent-runs 400]

1. raw engine: `SessionManager.run(key, "print(1)")` in this process (subprocess back end, warm template).
2. the same routes in this process: the app the server serves (`server.build_app`: the shared guard, the router,
   the sessions API), through httpx's ASGI transport (the app's own cost, no TCP or second process);
3. API: `POST /sessions/code/execute?api-version=2024-02-02-preview&identifier=…` with the DevUI bearer token
   to the real service (`python -m local_code_interpreter --devui`) on loopback, over a kept-alive connection.
Each: p50/p95 of sequential executions in one session, then executions per second with 4 concurrent callers,
each in its own session. The two are measured one after the other, never at once. `GET /health` on the same
connection shows what HTTP alone costs in this run. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time

import httpx

from local_code_interpreter.server import build_app
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load

CALLERS = 4
CODE = "print(1)"


def percentile(sorted_ms: list[float], pct: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * pct / 100))]


async def timed(runs: int, once) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await once(0)
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


async def throughput(total: int, once) -> float:
    remaining = total

    async def caller(n: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await once(n)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return total / (time.perf_counter() - started)


async def raw_engine(args) -> dict:
    settings = load({"max_concurrency": CALLERS}, {})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, settings.max_concurrency)
    await sandbox.start()
    manager = SessionManager(sandbox, settings)
    await manager.start()

    async def once(n: int) -> None:
        result = await manager.run(("bench", f"raw-{n}"), CODE)
        if result.stdout != "1\n":
            raise SystemExit(f"unexpected result: {result}")

    # The same routes in this process, composed as the server composes them (behind the guard, which authenticates
    # the caller: a loopback server without a token serves the local user): no TCP, no second process.
    app = build_app(settings, sandbox, sessions=manager)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    async def in_process(n: int) -> None:
        response = await client.post("/sessions/code/execute", json={"properties": {"code": CODE}},
                                     params={"api-version": "2024-02-02-preview", "identifier": f"asgi-{n}"})
        if response.status_code != 200 or response.json()["properties"]["stdout"] != "1\n":
            raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")

    try:
        for n in range(CALLERS):
            await once(n)
            await in_process(n)
        await timed(args.warmup, once)
        samples = await timed(args.runs, once)
        rate = await throughput(args.concurrent_runs, once)
        await timed(args.warmup, in_process)
        asgi = await timed(args.runs, in_process)
        asgi_rate = await throughput(args.concurrent_runs, in_process)
    finally:
        await client.aclose()
        await manager.close_all()
        await sandbox.close()
    return {"samples": samples, "rate": rate, "asgi": {"samples": asgi, "rate": asgi_rate}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def through_api(args) -> dict:
    token, port = secrets.token_urlsafe(24), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_", "LCI_", "DEVUI_"))}
    env.update(DEVUI_AUTH_TOKEN=token, LCI_MAX_CONCURRENCY=str(CALLERS), LCI_LOG_LEVEL="WARNING")
    server = subprocess.Popen([sys.executable, "-m", "local_code_interpreter", "--devui", "--port", str(port),
                               "--no-browser"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60,
                                     limits=httpx.Limits(max_keepalive_connections=CALLERS)) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the service did not start")
                await asyncio.sleep(0.1)

            async def once(n: int) -> None:
                response = await client.post("/sessions/code/execute", json={"properties": {
                    "codeInputType": "inline", "executionType": "synchronous", "code": CODE}},
                    params={"api-version": "2024-02-02-preview", "identifier": f"api-{n}"})
                body = response.json()
                if response.status_code != 200 or body["properties"]["stdout"] != "1\n":
                    raise SystemExit(f"unexpected answer {response.status_code}: {body}")

            async def health(n: int) -> None:
                if (await client.get("/health")).status_code != 200:
                    raise SystemExit("/health failed")

            for n in range(CALLERS):
                await once(n)
            await timed(args.warmup, once)
            samples = await timed(args.runs, once)
            rate = await throughput(args.concurrent_runs, once)
            transport = await timed(args.runs, health)
    finally:
        server.terminate()
        server.wait(10)
    return {"samples": samples, "rate": rate, "transport": transport}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrent-runs", type=int, default=400)
    args = parser.parse_args()
    raw = asyncio.run(raw_engine(args))
    api = asyncio.run(through_api(args))
    print(f"{CODE!r} in a session, {args.runs} sequential runs, then {args.concurrent_runs} with {CALLERS} callers")
    print(f"{'':28} {'p50 ms':>8} {'p95 ms':>8} {'exec/s (4 callers)':>20}")
    rows = (("raw engine (manager.run)", raw), ("sessions API in process", raw["asgi"]), ("sessions API (HTTP)", api))
    for name, figures in rows:
        samples = figures["samples"]
        print(f"{name:28} {percentile(samples, 50):8.2f} {percentile(samples, 95):8.2f} {figures['rate']:20.1f}")
    health = api["transport"]
    print(f"{'GET /health (HTTP alone)':28} {percentile(health, 50):8.2f} {percentile(health, 95):8.2f}")
    print(f"API overhead p50: {percentile(api['samples'], 50) - percentile(raw['samples'], 50):+.2f} ms")
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().strip()}")


if __name__ == "__main__":
    main()
