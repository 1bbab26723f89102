"""A request's own function tools (`tools: [{"type": "function", ...}]`), offered to the model beside the server's
code interpreter, for this run only. The server declares them and does not run them: when the model calls one, the
run stops there and the response holds that `function_call` (the server's own calls are `code_interpreter_call`
items: `tool_items.py`); the client runs it and answers with a `function_call_output` item in the next request
(`previous_response_id`, `conversation`, or the whole history sent back), and the model goes on from there. That is
what a client agent does with the OpenAI API (the OpenAI Agents SDK's function tools, for one).

`{"type": "code_interpreter", ...}` asks for what the server is: accepted, nothing to add; its `container`, when it
names one (a `container_id` a response showed: `containers.py`), is where the code runs (`named_container`), so a
client that keeps the conversation itself (sending the whole history back, `store: false`) keeps its variables and
files; `{"type": "auto"}` (or none) leaves it to the conversation. Any other hosted tool type
(web search, file search, MCP...) is a 400 that says so, not a tool silently missing; so is a function tool named like
the server's own, or one without a name or with `parameters` that are not a JSON schema of an object (the model's
service would refuse the request, after the fact).
"""

from __future__ import annotations

import re
from typing import Any

from agent_framework import FunctionTool

from ..tool import TOOL_NAME
from .containers import CONTAINER_RULE, is_container_id

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the OpenAI API accepts as a function name
_SERVED = "code_interpreter"  # a hosted tool type this server is


def client_tools(tools: Any) -> list[FunctionTool]:
    """The declaration-only tools for `tools` (the request's; None: none); ValueError names what is wrong."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ValueError("'tools' must be an array")
    declared: list[FunctionTool] = []
    names: set[str] = set()
    for n, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == _SERVED:
            continue
        if kind != "function":
            raise ValueError(f"tools[{n}]: type {kind!r} is not served here: this server's agent has a code "
                             "interpreter (`code_interpreter`), and runs the model with your `function` tools")
        name = tool.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"tools[{n}]: a function tool needs a `name` of 1 to 64 letters, digits, _ or -")
        if name == TOOL_NAME or name in names:
            raise ValueError(f"tools[{n}]: the name {name!r} is taken" + (" by the server's own tool"
                                                                          if name == TOOL_NAME else ""))
        description = tool.get("description") or ""
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(description, str) or not isinstance(parameters, dict) or parameters.get("type") != "object" \
                or not isinstance(parameters.get("properties", {}), dict):
            raise ValueError(f"tools[{n}]: `description` must be a string and `parameters` a JSON schema object "
                             '(`"type": "object"`, its `properties` an object)')
        names.add(name)
        declared.append(FunctionTool(name=name, description=description, input_model=parameters, func=None))
    return declared


def named_container(tools: Any) -> str | None:
    """The container a `code_interpreter` tool of `tools` names (None: the conversation's); ValueError when it is
    neither a container id nor `{"type": "auto"}`."""
    if not isinstance(tools, list):
        return None
    for n, tool in enumerate(tools):
        if not (isinstance(tool, dict) and tool.get("type") == _SERVED) or tool.get("container") is None:
            continue
        container = tool["container"]
        if is_container_id(container):
            return container
        if isinstance(container, dict) and container.get("type") == "auto":
            continue
        raise ValueError(f"tools[{n}]: `container` must be a container id (the `container_id` of a code "
                         f"interpreter call, or an id of yours: {CONTAINER_RULE}) or {{\"type\": \"auto\"}}")
    return None
