"""A streamed run's `execute_code` call as the OpenAI API streams a call of its own code interpreter
(`http/tool_stream.py`): its item is added when the model starts the call, its code is sent and it is
`interpreting` while the sandbox runs it (not after), and it is done with its outputs when its result arrives, at
the output index the final response gives it, between the messages around it; the helpers' events keep their order
and the sequence numbers run on without a gap."""

import asyncio
import json

import httpx
import openai
import pytest
from agent_framework import AgentResponse, AgentResponseUpdate, Content

from inprocess import app_client, sse_events
from local_code_interpreter import server
from local_code_interpreter.http.tool_stream import ShownRun
from local_code_interpreter.progress import REPORTER
from local_code_interpreter.sandbox import create_sandbox
from local_code_interpreter.settings import load

CALL_EVENTS = ["response.output_item.added", "response.code_interpreter_call.in_progress",
               "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
               "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed",
               "response.output_item.done"]
MESSAGE_EVENTS = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                  "response.output_text.done", "response.content_part.done", "response.output_item.done"]


def _indices(events: list[dict]) -> list[int | None]:
    return [event.get("output_index") for event in events]


def test_over_http_the_call_streams_its_own_events_before_the_answer():
    async def run():
        async with app_client() as (c, _s, _sb):
            streamed = await c.post("/v1/responses", json={"input": "print(6 * 7)", "stream": True})
            client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:8090/v1", http_client=c)
            async with client.responses.stream(model="agent", input="print(7 * 8)") as stream:
                seen = [event.type async for event in stream]
                final = await stream.get_final_response()
            return sse_events(streamed.text), seen, final

    events, seen, final = asyncio.run(run())
    assert [e["type"] for e in events] == ["response.created", *CALL_EVENTS, *MESSAGE_EVENTS, "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert _indices(events[1:-1]) == [0] * len(CALL_EVENTS) + [1] * len(MESSAGE_EVENTS)
    added, done, response = events[1]["item"], events[7]["item"], events[-1]["response"]
    assert added["type"] == "code_interpreter_call" and added["status"] == "in_progress" and "outputs" not in added
    assert events[3]["delta"] == events[4]["code"] == "print(6 * 7)"
    assert done == response["output"][0] and done["id"] == added["id"] and done["status"] == "completed"
    assert "42" in done["outputs"][0]["logs"]
    assert events[8]["item"]["id"] == response["output"][1]["id"]  # the answer's message, at index 1
    # the official client's stream helper reads them (it keys items by output index) to the same final response
    assert seen[:len(CALL_EVENTS) + 1] == ["response.created", *CALL_EVENTS]
    assert [item.type for item in final.output] == ["code_interpreter_call", "message"]
    assert "56" in final.output[0].outputs[0].logs


def test_the_call_is_interpreting_while_the_sandbox_runs_it():
    """Read as the client reads them, write by write: the code and `interpreting` arrive while the cell is still
    running (it waits for the test to see them), its outputs after."""
    gate = asyncio.Event()
    ran: list[str] = []

    async def run():
        settings = load({"sandbox": "monty"}, environ={})
        sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, 4)
        await sandbox.start()
        run_cell = sandbox.run

        async def gated(code, *args, **kwargs):  # the sandbox takes its time: until the client saw the call run
            await asyncio.wait_for(gate.wait(), 10)
            ran.append(code)
            return await run_cell(code, *args, **kwargs)

        sandbox.run = gated
        app = server.build_app(settings, sandbox)
        body = json.dumps({"input": "print(6 * 7)", "stream": True}).encode()
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/responses",
                 "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8090),
                 "headers": [(b"host", b"127.0.0.1:8090"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        events: list[tuple[dict, bool]] = []  # each event, and whether the cell had run when it was sent
        writes: list[int] = []  # events per body message

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            writes.append(len(sse_events(message.get("body", b"").decode())))
            for event in sse_events(message.get("body", b"").decode()):
                events.append((event, bool(ran)))
                if event["type"] == "response.code_interpreter_call.interpreting":
                    gate.set()

        try:
            await app(scope, receive, send)
        finally:
            await sandbox.close()
        return events, writes

    events, writes = asyncio.run(run())
    # the events ready together go out in one write: those before the cell runs, those after it
    assert sum(writes) == len(events) and len([n for n in writes if n]) <= 3, writes
    kinds = {event["type"]: had_run for event, had_run in events}
    assert kinds["response.code_interpreter_call_code.done"] is False
    assert kinds["response.code_interpreter_call.interpreting"] is False
    assert kinds["response.code_interpreter_call.completed"] is True and ran == ["print(6 * 7)"]


def _stream(updates: list[AgentResponseUpdate], between: dict[int, object]):
    """A run's stream: `updates`, with `between[i]()` awaited before the i-th."""

    class Stream:
        def __aiter__(self):
            async def each():
                for i, update in enumerate(updates):
                    if i in between:
                        await between[i]()
                    yield update
            return each()

        async def get_final_response(self):
            return AgentResponse.from_updates(updates)

    return Stream()


def _call(call_id: str, piece: str, message_id: str) -> AgentResponseUpdate:
    return AgentResponseUpdate(role="assistant", message_id=message_id, contents=[
        Content.from_function_call(call_id, "execute_code", arguments=piece, merge_mode="append")])


def _text(text: str, message_id: str) -> AgentResponseUpdate:
    return AgentResponseUpdate(role="assistant", message_id=message_id, contents=[Content.from_text(text)])


def _result(call_id: str, text: str) -> AgentResponseUpdate:
    return AgentResponseUpdate(role="tool", contents=[Content.from_function_result(call_id, result=text)])


@pytest.mark.parametrize("together", [False, True], ids=["apart", "in-one-update"])
def test_text_before_two_calls_and_after_them_keeps_each_item_at_its_final_index(together):
    """The model says something, writes two calls in pieces, and answers after both ran: the first message is done
    before the first call is added, each call has the index the final response gives it, and the answer's message
    comes after them. The same when the text and the first call's first piece come in one update."""
    sandbox_started: list[str] = []

    async def start(call_id):
        REPORTER.get().started(call_id)  # what progress.ReportsCalls does as the tool starts
        sandbox_started.append(call_id)

    updates = [_text("Let me ", "m1"), _text("run it.", "m1"),
               _call("call_a", '{"code": "print(', "m1"), _call("call_a", '6 * 7)"}', "m1"),
               _call("call_b", '{"code": "x = 1"}', "m1"),
               _result("call_a", "stdout:\n42\n"), _result("call_b", ""), _text("42 it is.", "m2")]
    if together:
        updates[1:3] = [AgentResponseUpdate(role="assistant", message_id="m1",
                                            contents=[*updates[1].contents, *updates[2].contents])]

    async def run():
        results = [i for i, update in enumerate(updates) if update.role == "tool"]
        shown = ShownRun(_stream(updates, {results[0]: lambda: start("call_a"), results[1]: lambda: start("call_b")}),
                         response_id="resp_1")
        return [json.loads(e.split("data: ", 1)[1]) async for e in shown.events()]

    events = asyncio.run(run())
    kinds = [(e["type"], e.get("output_index")) for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    first_done = kinds.index(("response.output_item.done", 0))
    assert first_done < kinds.index(("response.output_item.added", 1)) < kinds.index(("response.output_item.added", 2))
    response = events[-1]["response"]
    assert [(item["type"], item.get("id")) for item in response["output"]] == [
        ("message", response["output"][0]["id"]), ("code_interpreter_call", "call_a"),
        ("code_interpreter_call", "call_b"), ("message", response["output"][3]["id"])]
    for index, call_id, code in ((1, "call_a", "print(6 * 7)"), (2, "call_b", "x = 1")):
        mine = [e for e in events if e.get("output_index") == index]
        assert [e["type"] for e in mine] == CALL_EVENTS
        assert {e.get("item_id", e.get("item", {}).get("id")) for e in mine} == {call_id}
        assert mine[3]["code"] == code and mine[-1]["item"] == response["output"][index]
    answer = [e for e in events if e.get("output_index") == 3]
    assert [e["type"] for e in answer] == MESSAGE_EVENTS and answer[0]["item"]["id"] == response["output"][3]["id"]
    assert sandbox_started == ["call_a", "call_b"]


@pytest.mark.parametrize("failure", ["model", "client"])
def test_a_run_that_fails_or_a_client_that_goes_ends_the_stream_and_the_run(failure):
    """The run failing mid-call ends the stream with the helpers' `response.failed`; a client that stops reading
    (its connection closed) ends the run: nothing goes on in the background."""
    finished = asyncio.Event()

    async def fail():
        raise httpx.ReadError("the model service went away")

    async def forever():
        try:
            await asyncio.sleep(30)
        finally:
            finished.set()

    updates = [_call("call_a", '{"code": "print(1)"}', "m1"), _result("call_a", "1")]

    async def run():
        shown = ShownRun(_stream(updates, {1: fail if failure == "model" else forever}), response_id="resp_1")
        events = shown.events()
        seen = []
        async for event in events:
            seen.append(json.loads(event.split("data: ", 1)[1])["type"])
            if failure == "client" and len(seen) == 3:
                await events.aclose()
                break
        return seen

    seen = asyncio.run(run())
    if failure == "model":
        assert seen == ["response.created", *CALL_EVENTS[:2], "response.failed"]
    else:
        assert seen == ["response.created", *CALL_EVENTS[:2]] and finished.is_set()


def test_a_clients_call_that_ends_the_run_gets_its_events_before_the_final_one():
    """The helpers stream no item but messages; a client's own function call (it ends the run: the client runs it)
    gets its `added`, arguments and `done` before `response.completed`, after the code call and the message before
    it, as the final response holds it."""
    client_call = AgentResponseUpdate(role="assistant", message_id="m2", contents=[Content.from_function_call(
        "call_c", "lookup", arguments='{"key": "k"}', additional_properties={"openai": {"item_id": "fc_1"}})])
    updates = [_call("call_a", '{"code": "print(1)"}', "m1"), _result("call_a", "1"),
               _text("Now your lookup.", "m2"), client_call]

    async def run():
        return [json.loads(e.split("data: ", 1)[1]) async for e in ShownRun(_stream(updates, {}),
                                                                             response_id="resp_1").events()]

    events = asyncio.run(run())
    response = events[-1]["response"]
    assert [item["type"] for item in response["output"]] == ["code_interpreter_call", "message", "function_call"]
    assert [(e["type"], e.get("output_index")) for e in events[-5:-1]] == [
        ("response.output_item.added", 2), ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2), ("response.output_item.done", 2)]
    assert events[-2]["item"] == response["output"][2] and events[-3]["item_id"] == "fc_1"
    assert [e["type"] for e in events if e.get("output_index") == 0] == CALL_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
