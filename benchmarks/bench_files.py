"""The DevUI file path on the real subprocess sessions: attaching a file and downloading a produced one.

    .venv/bin/python benchmarks/bench_files.py [--runs 50]

Prints p50/p95 of:
- attach: `SaveAttachments.save_all` on a DevUI-shaped message (base64 decode + `SessionManager.upload`) of
  1 KiB and 1 MiB CSVs into a live session;
- download: `GET /files/<conversation>/<name>?t=<signed link>` through the whole application in process (guard,
  router, the download route, `SessionManager.read`) for 1 KiB and 1 MiB files, over httpx's ASGI transport;
- the chart round trip: one `SessionManager.run` that draws a matplotlib figure (captured as PNG) and writes a
  CSV, and its reply's display contents (data URI + signed link).
Figures only, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time

import httpx
from agent_framework import Content, Message

from local_code_interpreter.artifacts import Produced, display_contents
from local_code_interpreter.attachments import SaveAttachments
from local_code_interpreter.conversation import in_conversation
from local_code_interpreter.http.files import LinkSigner
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.server import build_app
from local_code_interpreter.sessions import SessionManager
from local_code_interpreter.settings import load

CHART = """import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
open("out.csv", "w").write("a,b\\n1,2\\n")"""


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def line(label: str, samples: list[float]) -> str:
    return f"  {label:<34} p50 {statistics.median(samples):8.3f} ms   p95 {pct(samples, 95):8.3f} ms   n={len(samples)}"


def message(name: str, data: bytes) -> Message:
    uri = "data:text/csv;base64," + base64.b64encode(data).decode()
    return Message(role="user", contents=[Content.from_text("print(1)"), Content.from_uri(
        uri=uri, media_type="text/csv", name=name,
        additional_properties={"openai_content_type": "input_file", "filename": name})])


async def main(runs: int) -> None:
    settings = load({"sandbox": "subprocess"}, environ={"DEVUI_AUTH_TOKEN": "bench-token"})
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, settings.max_concurrency)
    await sandbox.start()
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    links = LinkSigner.for_token(settings.auth_token)
    save = SaveAttachments(sessions)
    try:
        sizes = {"1 KiB": b"a,b\n" * 256, "1 MiB": b"a,b\n" * 262144}
        with in_conversation("conv_bench") as local_key:
            await sessions.run(local_key, "x = 0")  # the session exists before timing
            for label, data in sizes.items():
                samples = []
                for i in range(runs):
                    started = time.perf_counter()
                    await save.save_all([message(f"in-{i}.csv", data)])
                    samples.append((time.perf_counter() - started) * 1000)
                print(line(f"attach {label}", samples))
                for i in range(runs):
                    await sessions.delete(local_key, f"in-{i}.csv")
            samples = []
            for _ in range(max(5, runs // 5)):
                started = time.perf_counter()
                result = await sessions.run(local_key, CHART)
                display_contents([Produced(local_key, result.images, result.files)], links)
                samples.append((time.perf_counter() - started) * 1000)
            print(line("chart + file round trip (run)", samples)
                  + f"   png {len(result.images[0].data) if result.images else 0} bytes")
            for label, data in sizes.items():
                await sessions.upload(local_key, f"out-{label.replace(' ', '')}.bin", data)
        app = build_app(settings, sandbox, sessions=sessions)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8090") as client:
            for label, data in sizes.items():
                url = links.url(local_key, f"out-{label.replace(' ', '')}.bin")
                samples = []
                for _ in range(runs):
                    started = time.perf_counter()
                    response = await client.get(url)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200 and len(response.content) == len(data)
                print(line(f"download {label} (signed link)", samples))
    finally:
        await sessions.close_all()
        await sandbox.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
