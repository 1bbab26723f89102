"""A request's own function tools (`http/client_tools.py`): offered to the model, not run by the server; the call
reaches the client as a `function_call` and its `function_call_output` in the next request lets the model go on,
whether the client continues by `previous_response_id`, by `conversation`, or sends the whole history back."""

import asyncio
import json

import pytest

from inprocess import app_client, sse_events
from local_code_interpreter.http.client_tools import client_tools

LOOKUP = {"type": "function", "name": "lookup", "description": "Look a key up in the client's own store.",
          "parameters": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}


def _kinds(response: dict) -> list[str]:
    return [item["type"] for item in response["output"]]


def test_the_clients_call_reaches_it_and_its_output_lets_the_model_go_on(model_calls_lookup):
    async def run():
        async with app_client() as (c, _s, _sb):
            asked = (await c.post("/v1/responses", json={"input": "please look up k", "tools": [LOOKUP]})).json()
            answered = (await c.post("/v1/responses", json={
                "previous_response_id": asked["id"], "tools": [LOOKUP],
                "input": [{"type": "function_call_output", "call_id": "call_lookup", "output": "v-42"}]})).json()
            in_conversation = (await c.post("/v1/responses", json={
                "conversation": "conv_tools", "input": "please look up k", "tools": [LOOKUP]})).json()
            conversation_answer = (await c.post("/v1/responses", json={
                "conversation": "conv_tools", "tools": [LOOKUP],
                "input": [{"type": "function_call_output", "call_id": "call_lookup", "output": "v-43"}]})).json()
            stateless = (await c.post("/v1/responses", json={"store": False, "tools": [LOOKUP], "input": [
                {"role": "user", "content": "please look up k"}, *asked["output"],
                {"type": "function_call_output", "call_id": "call_lookup", "output": "v-44"}]})).json()
            code = (await c.post("/v1/responses", json={"input": "print(6 * 7)", "tools": [LOOKUP]})).json()
            return asked, answered, in_conversation, conversation_answer, stateless, code

    asked, answered, in_conversation, conversation_answer, stateless, code = asyncio.run(run())
    assert _kinds(asked) == ["function_call"] and asked["output"][0]["name"] == "lookup"
    assert json.loads(asked["output"][0]["arguments"]) == {"key": "k"}
    assert "the client's lookup said v-42" in answered["output"][-1]["content"][0]["text"]
    assert _kinds(in_conversation) == ["function_call"]
    assert "said v-43" in conversation_answer["output"][-1]["content"][0]["text"]
    assert "said v-44" in stateless["output"][-1]["content"][0]["text"]
    assert _kinds(code) == ["code_interpreter_call", "message"]  # the server's own tool still runs beside it


def test_streamed_the_call_reaches_the_client_as_a_function_call(model_calls_lookup):
    async def run():
        async with app_client() as (c, _s, _sb):
            return await c.post("/v1/responses", json={"input": "please look up k", "tools": [LOOKUP],
                                                       "stream": True})

    events = sse_events(asyncio.run(run()).text)
    final = events[-1]
    assert final["type"] == "response.completed"
    assert [item["type"] for item in final["response"]["output"]] == ["function_call"]
    # with the events a client that reads them (not the final response) acts on (http/tool_stream.py)
    assert [(e["type"], e.get("output_index")) for e in events[1:-1]] == [
        ("response.output_item.added", 0), ("response.function_call_arguments.delta", 0),
        ("response.function_call_arguments.done", 0), ("response.output_item.done", 0)]
    item = final["response"]["output"][0]
    assert events[1]["item"]["status"] == "in_progress" and events[1]["item"]["call_id"] == item["call_id"]
    assert events[2]["delta"] == events[3]["arguments"] == item["arguments"] and json.loads(item["arguments"]) == {
        "key": "k"}
    assert events[4]["item"] == item and [e["sequence_number"] for e in events] == list(range(len(events)))


def test_an_output_for_no_waiting_call_is_400(model_calls_lookup):
    async def run():
        async with app_client() as (c, _s, _sb):
            code = (await c.post("/v1/responses", json={"input": "print(1)"})).json()  # nothing left to the client
            return await c.post("/v1/responses", json={
                "previous_response_id": code["id"],
                "input": [{"type": "function_call_output", "call_id": "call_lookup", "output": "v"}]})

    answer = asyncio.run(run())
    assert answer.status_code == 400
    assert "nor waiting in the conversation it continues" in answer.json()["error"]["message"]


@pytest.mark.parametrize("tools, words", [
    ([{"type": "web_search"}], "type 'web_search' is not served here"),
    ([{"type": "function"}], "needs a `name`"),
    ([{"type": "function", "name": "no spaces"}], "needs a `name`"),
    ([dict(LOOKUP, name="execute_code")], "taken by the server's own tool"),
    ([LOOKUP, LOOKUP], "'lookup' is taken"),
    ([dict(LOOKUP, parameters=[1])], "`parameters` a JSON schema object"),
    ([dict(LOOKUP, parameters={"type": "string"})], "`parameters` a JSON schema object"),
    ([dict(LOOKUP, parameters={"type": "object", "properties": 5})], "`parameters` a JSON schema object"),
    ([5], "type None is not served"),
])
def test_a_tool_the_server_cannot_offer_is_400_naming_it(tools, words):
    async def run():
        async with app_client() as (c, _s, _sb):
            return await c.post("/v1/responses", json={"input": "print(1)", "tools": tools})

    answer = asyncio.run(run())
    assert answer.status_code == 400 and words in answer.json()["error"]["message"], answer.text


def test_code_interpreter_is_what_the_server_is_and_function_tools_are_declared_only():
    declared = client_tools([{"type": "code_interpreter", "container": {"type": "auto"}}, LOOKUP])
    assert [(tool.name, tool.declaration_only) for tool in declared] == [("lookup", True)]
    assert client_tools(None) == []
