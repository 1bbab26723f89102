"""How the server's own tool calls look to an API client: as the OpenAI API shows its hosted code interpreter.

The agent runs `execute_code` itself, in the sandbox: the model sees a function call and its result, and so does
every later turn (the kept history holds them as they are). An API client is shown one `code_interpreter_call` item
for each, in place of a `function_call` and a `function_call_output`: a client agent (the OpenAI Agents SDK, for
one) runs every function call it is given and has no `execute_code` to run, while a hosted tool's call is done by
the time the client sees it. The item holds the code (`code`) and what it printed and drew (`outputs`: `logs`, and
`image` with a chart as a data URL); its id is the call's, so the same item sent back in a later `input`
(`input_items.py`) becomes that call and its result again. The items are rendered by the hosting helpers
(`code_interpreter_tool_call` and `code_interpreter_tool_result` contents): only the contents are swapped here.

Streamed, the same swap is made update by update, with the events the OpenAI API streams for such a call:
`tool_stream.py`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from agent_framework import AgentResponse, Content, Message

from ..tool import TOOL_NAME

HIDDEN_FAILURE = "Error: Function failed."  # what the helpers show for a call that raised (no diagnostics)


def shown(result: AgentResponse, container: str | None = None) -> AgentResponse:
    """`result` with each `execute_code` call and its result as one code interpreter call (a copy; `result` is
    kept as it is, for the history); `container`: the id its items name as their `container_id` (the conversation
    whose session ran them: `containers.py` serves its files)."""
    calls = {c.call_id: c for m in result.messages for c in m.contents if ours(c)}
    results = {c.call_id: c for m in result.messages for c in m.contents
               if c.type == "function_result" and c.call_id in calls}
    if not results:
        return result
    messages: list[Message] = []
    for message in result.messages:
        contents: list[Content] = []
        for content in message.contents:
            if content.type == "function_call" and content.call_id in results:
                contents += pair(content.call_id, code_of(content.arguments), results[content.call_id], container)
            elif not (content.type == "function_result" and content.call_id in results):
                contents.append(content)
        if contents:
            kept = copy.copy(message)
            kept.contents = contents
            messages.append(kept)
    changed = copy.copy(result)
    changed.messages = messages
    return changed


def ours(content: Content) -> bool:
    return content.type == "function_call" and content.name == TOOL_NAME and bool(content.call_id)


def arguments_text(arguments: Any) -> str:
    if arguments is None:
        return ""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def code_of(arguments: Any) -> str:
    """The `code` argument, or the arguments as they came when they are not that (a model's malformed call)."""
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else arguments_text(arguments)


def pair(call_id: str, code: str, result: Content, container: str | None = None) -> list[Content]:
    outputs: Sequence[Content] = result.items or []
    visible = any(item.type != "text" or item.text for item in outputs)
    if result.exception is not None and not result.result and not visible:
        outputs = [Content.from_text(HIDDEN_FAILURE)]
    item = {"openai": {"item_id": call_id, **({"container_id": container} if container else {})}}
    return [Content.from_code_interpreter_tool_call(call_id=call_id, inputs=[Content.from_text(code)],
                                                    additional_properties=item),
            Content.from_code_interpreter_tool_result(call_id=call_id, outputs=list(outputs),
                                                      additional_properties=item)]
