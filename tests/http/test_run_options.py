"""What a request asks of the model (`http/run_options.py`): translated to Agent Framework's options, and a bad value
is a 400 naming it before anything runs (the model's service would refuse it inside the run, after the fact).
Through the real model client: `tests/e2e/test_workload_identity.py`."""

import asyncio

import pytest
from agent_framework import FunctionTool

from inprocess import app_client
from local_code_interpreter.http.run_options import run_options

LOOKUP = FunctionTool(name="lookup", description="", input_model={"type": "object", "properties": {}}, func=None)


def test_the_options_a_request_sets_are_translated_and_the_model_is_the_servers():
    schema = {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}}, "verbosity": "low"}
    options = run_options({"model": "gpt-x", "temperature": 0.2, "max_output_tokens": 50, "parallel_tool_calls": False,
                           "tool_choice": {"type": "function", "name": "lookup"}, "text": schema,
                           "reasoning": {"effort": "low"}, "instructions": "be brief"}, [LOOKUP])
    assert options == {"temperature": 0.2, "max_tokens": 50, "allow_multiple_tool_calls": False,
                       "tool_choice": {"mode": "required", "required_function_name": "lookup"}, "text": schema,
                       "reasoning": {"effort": "low"}, "instructions": "be brief"}
    assert run_options({"tool_choice": {"type": "code_interpreter"}})["tool_choice"] == {
        "mode": "required", "required_function_name": "execute_code"}
    assert run_options({"tool_choice": "none"}) == {"tool_choice": "none"} and run_options({}) == {}


@pytest.mark.parametrize("fields, words", [
    ({"tool_choice": "always"}, "'tool_choice' must be one of auto, none, required"),
    ({"tool_choice": {"type": "function", "name": "lookup"}}, "not one of this request's tools"),
    ({"tool_choice": {"type": "web_search_preview"}}, "of type 'web_search_preview' is not served here"),
    ({"text": {"format": {"type": "xml"}}}, "'text.format.type' must be one of text, json_object, json_schema"),
    ({"text": {"format": {"type": "json_schema", "name": "r"}}}, "needs a 'name' and a 'schema' object"),
    ({"text": {"format": "json"}}, "'text.format.type' must be one of"),
    ({"text": {"verbosity": "loud"}}, "'text.verbosity' must be low, medium or high"),
    ({"reasoning": "high"}, "'reasoning' must be an object"),
])
def test_a_bad_option_is_a_400_that_names_it_and_the_server_goes_on(fields, words):
    async def run():
        async with app_client() as (c, _s, sandbox):
            answer = await c.post("/v1/responses", json={"input": "print(1)", **fields})
            return answer, await c.post("/v1/responses", json={"input": "print(6 * 7)"})

    answer, after = asyncio.run(run())
    assert answer.status_code == 400 and words in answer.json()["error"]["message"], answer.text
    assert after.status_code == 200 and "42" in after.text  # the server goes on serving
