"""A few thousand requests against one process: what must not grow does not grow (behaviour, not timing).

Before the fix, every DevUI run added a span processor to the global tracer provider (never removed), every later
span walked all of them and each dead one logged a warning: processors, log lines and time grew per request.
"""

import asyncio
import gc
import logging
import tracemalloc

import pytest

from inprocess import app_client, devui_entity, sse_events
from local_code_interpreter import telemetry

REQUESTS = 3300
SETTLED = 900  # requests before the first snapshot: every bounded store has turned over under tracing


class Counter(logging.Handler):
    """Counts INFO-and-above lines per logger (keeps a few samples of the non-access ones)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.access = 0
        self.others: list[str] = []

    def emit(self, record):
        if record.name == "local_code_interpreter.access":
            self.access += 1
        elif len(self.others) < 5:
            self.others.append(f"{record.name}: {record.getMessage()}")


async def _mixed(client, entity: str, i: int, page: str) -> None:
    """Five kinds: lean plain, lean streaming, DevUI page (streaming, its trace capture on), a lean conversation kept
    in the (full, evicting) conversation store, and the next turn of one long page conversation (`page`: DevUI's
    store, at its bound of messages)."""
    kind = i % 5
    if kind == 4:
        answer = await client.post("/v1/responses", json={"input": f"print({i}*3)", "stream": True,
                                                          "metadata": {"entity_id": entity}, "conversation": page})
        assert answer.status_code == 200 and str(i * 3) in answer.text, answer.text[:500]
        return
    if kind == 3:
        answer = await client.post("/v1/responses", json={"input": f"print({i}*3)"})
        assert answer.status_code == 200 and str(i * 3) in answer.text
    elif kind == 0:
        answer = await client.post("/v1/responses", json={"input": f"print({i}*3)", "store": False})
        assert answer.status_code == 200 and str(i * 3) in answer.text
    elif kind == 1:
        answer = await client.post("/v1/responses", json={"input": f"print({i}*3)", "stream": True, "store": False})
        assert answer.status_code == 200 and str(i * 3) in answer.text
    else:
        answer = await client.post("/v1/responses", json={"input": f"print({i}*3)", "stream": True,
                                                          "metadata": {"entity_id": entity}})
        assert answer.status_code == 200 and str(i * 3) in answer.text, answer.text[:500]


def test_nothing_grows_over_thousands_of_requests():
    counter = Counter()
    root = logging.getLogger()
    old_level = root.level

    async def run():
        env = {"LCI_CONVERSATIONS_MAX": "20", "LCI_CONVERSATION_MAX_ITEMS": "40"}
        async with app_client(env=env) as (client, _settings, _sandbox):
            from local_code_interpreter import logs

            logs.configure("INFO", "text")
            root.addHandler(counter)
            entity = await devui_entity(client)
            page = (await client.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]
            installed = telemetry.setup()
            processors_at_start = installed.processor_count()
            for i in range(300):  # warm: caches, first imports
                await _mixed(client, entity, i, page)
            tracemalloc.start()
            # The bounded stores turn over once under tracing (the page conversation's 200 trace events need 120 of
            # its turns): their steady state is in both snapshots, only growth in the difference.
            for i in range(300, SETTLED):
                await _mixed(client, entity, i, page)
            gc.collect()
            first = tracemalloc.take_snapshot()
            tasks = len(asyncio.all_tasks())
            counter.access, counter.others = 0, []
            for i in range(SETTLED, REQUESTS):
                await _mixed(client, entity, i, page)
            gc.collect()
            last = tracemalloc.take_snapshot()
            tracemalloc.stop()
            # no task left behind (a streamed response's helpers run in one of their own: http/tool_stream.py)
            assert len(asyncio.all_tasks()) <= tasks
            return processors_at_start, installed.processor_count(), installed.router.pending(), first, last

    try:
        at_start, at_end, pending, first, last = asyncio.run(run())
    finally:
        root.removeHandler(counter)
        root.setLevel(old_level)
    served = REQUESTS - SETTLED
    assert at_end == at_start == 1 + len(telemetry.setup().exporters)  # the router (+ configured exporters) only
    assert pending == 0  # every routed span was handed over and forgotten
    assert not counter.others  # nothing per span, nothing per request but the access line
    assert counter.access == served  # exactly one access line per request
    growth = sum(stat.size_diff for stat in last.compare_to(first, "filename"))
    print(f"\n{served} requests: retained memory growth {growth / 1024:.0f} KiB, "
          f"{growth / served:.0f} B/request; processors {at_end}")
    assert growth < 96 * 1024, "\n".join(str(s) for s in last.compare_to(first, "lineno")[:15])


def test_devui_trace_panels_get_their_own_spans_only():
    """Two DevUI runs at once: each stream's trace events belong to that run's traces, none to the other's."""

    async def run():
        async with app_client() as (client, _settings, _sandbox):
            entity = await devui_entity(client)

            async def one(code: str):
                answer = await client.post("/v1/responses", json={
                    "input": code, "stream": True, "metadata": {"entity_id": entity}})
                events = sse_events(answer.text)
                traces = [e for e in events if e.get("type") == "response.trace.completed"]
                return {t["data"]["trace_id"] for t in traces}, {t["data"]["response_id"] for t in traces}

            return await asyncio.gather(one("import time\ntime.sleep(0.2)\nprint(1)"),
                                        one("import time\ntime.sleep(0.2)\nprint(2)"))

    (traces_a, ids_a), (traces_b, ids_b) = asyncio.run(run())
    assert traces_a and traces_b, "DevUI's trace panel received no spans"
    assert not traces_a & traces_b
    assert len(ids_a) == len(ids_b) == 1 and ids_a != ids_b


@pytest.mark.parametrize("store", [True, False])
def test_lean_requests_record_no_spans_without_an_exporter(store):
    async def run():
        async with app_client() as (client, _s, _sb):
            installed = telemetry.setup()
            if installed.exporters:
                pytest.skip(f"an exporter is configured in this environment: {installed.exporters}")
            from opentelemetry import trace

            seen = []

            class Watch:
                def on_start(self, span, parent_context=None):
                    seen.append(span.name)

                def on_end(self, span):
                    pass

                def shutdown(self):
                    pass

                def force_flush(self, timeout_millis=0):
                    return True

            # Watch what the provider would hand processors: a dropped span never reaches them.
            provider = trace.get_tracer_provider()
            processors = provider._active_span_processor
            before = processors._span_processors
            processors._span_processors = before + (Watch(),)
            try:
                answer = await client.post("/v1/responses", json={"input": "print(5)", "store": store})
            finally:
                processors._span_processors = before
            assert answer.status_code == 200
            return seen

    assert asyncio.run(run()) == []


def test_agent_framework_builds_no_spans_nobody_reads(monkeypatch):
    """Without an exporter, the lean path's runs skip Agent Framework's instrumentation altogether (no span
    attributes built); a DevUI page run, whose trace panel reads its spans, still gets them."""
    from agent_framework import observability

    built = []
    original = observability._get_span_attributes
    monkeypatch.setattr(observability, "_get_span_attributes", lambda **kw: built.append(1) or original(**kw))

    async def run():
        async with app_client() as (client, _s, _sb):
            if telemetry.setup().exporters:
                pytest.skip(f"an exporter is configured in this environment: {telemetry.setup().exporters}")
            lean = await client.post("/v1/responses", json={"input": "print(5)"})
            assert lean.status_code == 200 and "5" in lean.text
            after_lean = len(built)
            page = await client.post("/v1/responses", json={"input": "print(6)", "stream": True,
                                                            "metadata": {"entity_id": await devui_entity(client)}})
            traces = [e for e in sse_events(page.text) if e.get("type") == "response.trace.completed"]
            return after_lean, len(built), traces

    after_lean, after_page, traces = asyncio.run(run())
    assert after_lean == 0
    assert after_page > 0 and traces, "the DevUI page run lost its trace panel"
