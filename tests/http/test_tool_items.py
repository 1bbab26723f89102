"""The server's own tool calls as API clients see them (`http/tool_items.py`): one `code_interpreter_call` per
`execute_code` call and result, plain and streamed (a streamed call's own events: `test_tool_stream.py`), while the
history keeps the function call and its result; the OpenAI Agents SDK's kind of client, which runs every function
call it is given, has nothing to run."""

import asyncio
import base64
import json

from agent_framework import AgentResponse, Content, Message
from agent_framework_hosting_responses import responses_from_run

from inprocess import app_client
from local_code_interpreter.http.input_items import messages_from_input
from local_code_interpreter.http.tool_items import HIDDEN_FAILURE, shown

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def _run(call_id: str = "call_1", exception: str | None = None, result=None) -> AgentResponse:
    result = result if result is not None else [Content.from_text("stdout:\n42\n"), Content.from_uri(PNG)]
    return AgentResponse(messages=[
        Message("assistant", [Content.from_function_call(call_id, "execute_code",
                                                         arguments='{"code": "print(6 * 7)"}')]),
        Message("tool", [Content.from_function_result(call_id, result=result, exception=exception)]),
        Message("assistant", [Content.from_text("42")])])


def test_a_call_and_its_result_become_one_code_interpreter_call_and_the_run_keeps_them():
    run = _run()
    payload = responses_from_run(shown(run), response_id="resp_1")
    call, message = payload["output"]
    assert call["type"] == "code_interpreter_call" and call["id"] == "call_1" and call["code"] == "print(6 * 7)"
    assert call["outputs"] == [{"type": "logs", "logs": "stdout:\n42\n"}, {"type": "image", "url": PNG}]
    assert message["type"] == "message" and message["content"][0]["text"] == "42"
    # the run itself (the history a later turn sends the model) still holds the function call and its result
    assert [c.type for m in run.messages for c in m.contents] == ["function_call", "function_result", "text"]
    # and the item sent back in a later input is that call and that result again
    again = messages_from_input([call])
    assert [(m.role, [c.type for c in m.contents]) for m in again] == [("assistant", ["function_call"]),
                                                                       ("tool", ["function_result"])]
    assert json.loads(again[0].contents[0].arguments) == {"code": "print(6 * 7)"}
    assert again[0].contents[0].call_id == again[1].contents[0].call_id == "call_1"
    assert [item.type for item in again[1].contents[0].items] == ["text", "data"]


def test_a_call_that_raised_shows_no_diagnostics_and_other_calls_stay_function_calls():
    failed = responses_from_run(shown(_run(exception="Traceback: secret internals", result="")), response_id="r")
    assert failed["output"][0]["outputs"] == [{"type": "logs", "logs": HIDDEN_FAILURE}]
    other = AgentResponse(messages=[
        Message("assistant", [Content.from_function_call("call_2", "search", arguments="{}")]),
        Message("tool", [Content.from_function_result("call_2", result="found")])])
    assert shown(other) is other  # not ours: shown as the helpers show any function call
    unanswered = AgentResponse(messages=[_run().messages[0]])
    assert shown(unanswered) is unanswered  # a call without its result stays a function call


def test_over_http_plain_and_streamed_answers_hold_no_function_call():
    async def run():
        async with app_client() as (c, _s, _sb):
            plain = (await c.post("/v1/responses", json={"input": "print(6 * 7)"})).json()
            streamed = await c.post("/v1/responses", json={"input": "print(6 * 7)", "stream": True})
            return plain, streamed.text

    plain, events = asyncio.run(run())
    assert [item["type"] for item in plain["output"]] == ["code_interpreter_call", "message"]
    assert "function_call" not in events
    final = json.loads(events.split("event: response.completed\ndata: ")[1].split("\n")[0])["response"]
    assert [item["type"] for item in final["output"]] == ["code_interpreter_call", "message"]
    assert final["output"][0]["code"] == "print(6 * 7)" and "42" in final["output"][0]["outputs"][0]["logs"]
