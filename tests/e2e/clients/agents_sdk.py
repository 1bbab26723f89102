"""Drive the lean `/v1/responses` with the OpenAI Agents SDK, unchanged, in its own virtual environment
(scripts/tools/aca-clients.sh): `python agents_sdk.py BASE_URL TOKEN`. Prints one JSON report (the last line) that
tests/e2e/test_responses_clients.py judges; a case that raises reports the exception instead of its answer.

The SDK's model is our service (`OpenAIResponsesModel` on an `AsyncOpenAI` client): it runs every function call a
response holds, so a server-side tool call shown as a `function_call` would fail the run ("Tool ... not found").
"""
from __future__ import annotations

import asyncio
import json
import sys

from agents import (Agent, CodeInterpreterTool, ModelSettings, OpenAIConversationsSession, OpenAIResponsesModel, Runner,
                    function_tool, set_tracing_disabled)
from openai import AsyncOpenAI


@function_tool
def lookup(key: str) -> str:
    """A tool of the client's own, beside the server's code interpreter."""
    return f"value of {key}"


async def case(report: dict, name: str, run) -> None:
    try:
        report[name] = await run()
    except Exception as error:  # noqa: BLE001 - reported, judged by the test
        report[name] = {"raised": f"{type(error).__name__}: {error}"}


async def main(base: str, token: str) -> dict:
    set_tracing_disabled(True)  # no trace export to OpenAI from a test
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)
    model = OpenAIResponsesModel(model="local-code-interpreter", openai_client=client)
    agent = Agent(name="analyst", instructions="Run the user's code.", model=model)
    report: dict = {}

    async def plain():
        result = await Runner.run(agent, "print(6 * 7)")
        items = [(item.type, getattr(item.raw_item, "type", None)) for item in result.new_items]
        return {"output": result.final_output, "items": items}

    async def history():  # the SDK keeps the context itself and sends it whole
        first = await Runner.run(agent, "print(6 * 7)")
        second = await Runner.run(agent, first.to_input_list() + [{"role": "user", "content": "print(7 * 8)"}])
        return {"output": second.final_output}

    async def chained():  # server-side state: the same sandbox session through previous_response_id
        first = await Runner.run(agent, "x = 41")
        second = await Runner.run(agent, "print(x + 1)", previous_response_id=first.last_response_id)
        return {"output": second.final_output}

    async def conversation():  # server-side state in a conversation the SDK names (`conversation_id`)
        created = await client.conversations.create()
        await Runner.run(agent, "y = 6", conversation_id=created.id)
        second = await Runner.run(agent, "print(y * 7)", conversation_id=created.id)
        return {"output": second.final_output}

    async def streamed():
        result = Runner.run_streamed(agent, "print(9 * 9)")
        events = [event async for event in result.stream_events()]
        raw = [event.data.type for event in events if event.type == "raw_response_event"]
        items = [event.name for event in events if event.type == "run_item_stream_event"]
        return {"output": result.final_output, "raw": raw, "items": items}

    async def session():  # the SDK's history kept in a conversation of the service (the Conversations API)
        kept = OpenAIConversationsSession(openai_client=client)
        await Runner.run(agent, "print(6 * 7)", session=kept)
        second = await Runner.run(agent, "print(7 * 8)", session=kept)
        items = [item.get("type") for item in await kept.get_items()]
        popped = await kept.pop_item()  # the latest item (the answer) leaves the conversation
        after = [item.get("type") for item in await kept.get_items()]
        third = await Runner.run(agent, "print(8 * 9)", session=kept)  # the history still holds together
        return {"output": second.final_output, "items": items, "popped": popped.get("type"), "after": after,
                "third": third.final_output}

    async def own_tools():
        helper = Agent(name="helper", instructions="Run the user's code.", model=model, tools=[lookup])
        return {"output": (await Runner.run(helper, "print(2 ** 10)")).final_output}

    async def hosted():  # an agent written for the OpenAI API's own code interpreter, unchanged
        tool = CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}})
        coder = Agent(name="coder", instructions="Run the user's code.", model=model, tools=[tool])
        result = await Runner.run(coder, "print(6 * 7)")
        calls = [item.raw_item for item in result.new_items if getattr(item.raw_item, "type", None)
                 == "code_interpreter_call"]
        return {"output": result.final_output, "container": calls[0].container_id if calls else None}

    async def stateless():  # the SDK keeps the history (store off); the container it names keeps the state
        tool = CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": "sdk-box"})
        coder = Agent(name="coder", instructions="Run the user's code.", model=model, tools=[tool],
                      model_settings=ModelSettings(store=False))
        first = await Runner.run(coder, "z = 20")
        second = await Runner.run(coder, first.to_input_list() + [{"role": "user", "content": "print(z + 22)"}])
        return {"output": second.final_output}

    for name, run in (("plain", plain), ("history", history), ("chained", chained), ("conversation", conversation),
                      ("streamed", streamed), ("session", session), ("own_tools", own_tools), ("hosted", hosted),
                      ("stateless", stateless)):
        await case(report, name, run)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
