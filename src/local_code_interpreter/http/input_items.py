"""A Responses `input` that carries an earlier response's output items, as a client that keeps the conversation
itself sends it: `input = earlier input + response.output + the new message` (the OpenAI API's stateless
multi-turn, for example with `store: false`).

`messages_from_responses_input` (agent-framework-hosting-responses) parses messages and their content parts, and
refuses every other item type. An answer of this server holds two more: `code_interpreter_call` (each
`execute_code` call it made, with its result: `tool_items.py`) and, from a reasoning model, `reasoning`; a client
may also send `function_call` and `function_call_output` items (its own record of the calls, or an answer of an
earlier version of this server). Those become what the agent itself keeps for a turn:
- `code_interpreter_call`: the `execute_code` call (its id as the call's id) and its result, `logs` as text and
  `image` as an image;
- `function_call` items in a row: one assistant message of function calls;
- `function_call_output` items in a row: one tool message of function results. An `output` given as content
  parts (text, an image, a file) is parsed by the same helper;
- `reasoning`: accepted and left out. The model's reasoning is not replayed: its encrypted form is readable only
  by the service that made it, and the conversation reads the same without it.

Everything else goes to the helper, in order, and gets its errors. As in the OpenAI API, each call needs its
output and each output its call (by `call_id`) within the `input`, except an output for a call the continued
history left to the client (`pending`: a call of a tool of the client's own, `client_tools.py`); any other output,
or a call left without one, is a client's mistake, answered 400 with the `call_id` named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from agent_framework import Content, Message
from agent_framework_hosting_responses import messages_from_responses_input

from ..attachments import inline_files
from ..tool import TOOL_NAME

CALL, OUTPUT, REASONING, CODE = "function_call", "function_call_output", "reasoning", "code_interpreter_call"
_OURS = (CALL, OUTPUT, REASONING, CODE)


def messages_from_input(value: Any, pending: Callable[[], Collection[str]] = frozenset,
                        open_calls: bool = False) -> list[Message]:
    """The messages of a Responses `input` (string or list of items); ValueError names what is wrong. `pending`
    gives the calls the continued history leaves for the client to answer (asked only when an output needs it).
    `open_calls`: a call may be left without its output, and no item at all is no message (a kept turn rebuilt
    from what is left of it: `conversation_items.py`)."""
    if not isinstance(value, list) or not any(isinstance(item, dict) and item.get("type") in _OURS
                                              for item in value):
        return messages_from_responses_input(value)
    messages: list[Message] = []
    plain: list[Any] = []  # items for the helper, up to the next of ours
    calls: dict[str, bool] = {}  # call_id -> its output seen
    waiting: Collection[str] | None = None  # `pending()`, once asked

    def flush() -> None:
        if plain:
            messages.extend(messages_from_responses_input(plain))
            plain.clear()

    for item in value:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _OURS:
            plain.append(item)
            continue
        flush()
        if kind == REASONING:
            continue
        if kind == CODE:
            call_id = _string(item, "id", kind)
            if call_id in calls:
                raise ValueError(f"`input` has two items with call_id {call_id!r}")
            calls[call_id] = True
            _append(messages, "assistant", Content.from_function_call(call_id, TOOL_NAME,
                                                                      arguments=json.dumps({"code": _code(item)})))
            _append(messages, "tool", Content.from_function_result(call_id, result=_output(_parts(item))))
            continue
        call_id = _string(item, "call_id", kind)
        if kind == CALL:
            if call_id in calls:
                raise ValueError(f"`input` has two function_call items with call_id {call_id!r}")
            calls[call_id] = False
            arguments = item.get("arguments", "")
            if not isinstance(arguments, str):
                raise ValueError("function_call `arguments` must be a string (JSON)")
            _append(messages, "assistant", Content.from_function_call(call_id, _string(item, "name", kind),
                                                                      arguments=arguments or None))
        else:
            if calls.get(call_id) is True:
                raise ValueError(f"`input` has two function_call_output items with call_id {call_id!r}")
            if call_id not in calls and call_id not in (waiting := pending() if waiting is None else waiting):
                raise ValueError(f"function_call_output with call_id {call_id!r} has no function_call before it "
                                 "in `input`, nor waiting in the conversation it continues")
            calls[call_id] = True
            _append(messages, "tool", Content.from_function_result(call_id, result=_output(item.get("output"))))
    flush()
    unanswered = [call_id for call_id, answered in calls.items() if not answered]
    if unanswered and not open_calls:
        raise ValueError(f"function_call with call_id {unanswered[0]!r} has no function_call_output in `input` "
                         "(send each call's output with it, as the response listed them)")
    if not messages and not open_calls:
        raise ValueError("`input` produced no messages")
    return messages


def _string(item: dict, key: str, kind: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} requires a non-empty string `{key}`")
    return value


def _code(item: dict) -> str:
    code = item.get("code")
    if code is not None and not isinstance(code, str):
        raise ValueError("code_interpreter_call `code` must be a string")
    return code or ""


def _parts(item: dict) -> str | list[dict]:
    """A code interpreter call's `outputs` as function output parts (`logs` text, `image` an image); "" if none."""
    outputs = item.get("outputs")
    if outputs is None:
        return ""
    if not isinstance(outputs, list):
        raise ValueError("code_interpreter_call `outputs` must be a list")
    parts: list[dict] = []
    for output in outputs:
        kind = output.get("type") if isinstance(output, dict) else None
        if kind == "logs" and isinstance(output.get("logs"), str):
            if output["logs"]:
                parts.append({"type": "input_text", "text": output["logs"]})
        elif kind == "image" and isinstance(output.get("url"), str) and output["url"]:
            parts.append({"type": "input_image", "image_url": output["url"]})
        else:
            raise ValueError("each code_interpreter_call output must be `logs` with a string `logs` or `image` "
                             "with a string `url`")
    return parts or ""


def _output(output: Any) -> str | list[Content]:
    """A `function_call_output`'s `output`: a string, or content parts parsed by the helper (as a message's)."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list) or not output:
        raise ValueError("function_call_output `output` must be a string or a non-empty list of content parts")
    try:
        (message,) = messages_from_responses_input(inline_files([{"role": "user", "content": output}]))
    except ValueError as error:
        raise ValueError(f"function_call_output `output`: {error}") from None
    return list(message.contents)


def _append(messages: list[Message], role: str, content: Content) -> None:
    """Into the last message when it is the same role's run of calls or results, else a new message."""
    kind = "function_call" if role == "assistant" else "function_result"
    last = messages[-1] if messages else None
    if last is not None and last.role == role and all(c.type == kind for c in last.contents):
        last.contents.append(content)
    else:
        messages.append(Message(role, [content]))
