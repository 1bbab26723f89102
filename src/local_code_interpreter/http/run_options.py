"""What a `/v1/responses` request asks of the model for its run, as Agent Framework's chat options (`Agent.run(...,
options=)`). The model is the server's: `model` is not passed on. Passed on, each checked first so a bad value is a
400 that names it instead of a failure inside the run:
- `temperature`, `top_p`, `max_output_tokens` (as `max_tokens`), `instructions` (beside the agent's own);
- `parallel_tool_calls` (as `allow_multiple_tool_calls`);
- `tool_choice`: `"auto"`, `"none"` (answer without running code or calling a tool), `"required"`, a function tool of
  the request (`{"type": "function", "name": ...}`), or `{"type": "code_interpreter"}` (run code first). A required
  call is required of the first model call only; the framework then lets the model answer (else it would loop);
- `text` (`format`: `text`, `json_object`, or `json_schema` with a `name` and a `schema`; `verbosity`): the answer's
  shape, as the model's service takes it (structured output: the OpenAI Agents SDK's `output_type`);
- `reasoning` (`effort`, `summary`), for reasoning models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_framework import FunctionTool

from ..tool import TOOL_NAME

_MODES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")


def run_options(request: dict, tools: Sequence[FunctionTool] = ()) -> dict[str, Any]:
    """The options for `request`'s run; `tools`: its own function tools (`client_tools`). ValueError names what is
    wrong."""
    options: dict[str, Any] = {}
    for field, option in (("temperature", "temperature"), ("top_p", "top_p"), ("max_output_tokens", "max_tokens"),
                          ("parallel_tool_calls", "allow_multiple_tool_calls")):
        if request.get(field) is not None:
            options[option] = request[field]
    if request.get("instructions"):
        options["instructions"] = request["instructions"]
    if request.get("tool_choice") is not None:
        options["tool_choice"] = _tool_choice(request["tool_choice"], {tool.name for tool in tools})
    if request.get("text") is not None:
        options["text"] = _text(request["text"])
    if request.get("reasoning") is not None:
        options["reasoning"] = request["reasoning"]
    return options


def _tool_choice(choice: Any, names: set[str]) -> Any:
    if isinstance(choice, str):
        if choice not in _MODES:
            raise ValueError(f"'tool_choice' must be one of {', '.join(_MODES)}, or an object naming a tool")
        return choice
    kind = choice.get("type")
    if kind == "code_interpreter":
        return {"mode": "required", "required_function_name": TOOL_NAME}
    if kind == "function":
        name = choice.get("name")
        if name not in names:
            raise ValueError(f"'tool_choice' names the function {name!r}, which is not one of this request's tools")
        return {"mode": "required", "required_function_name": name}
    raise ValueError(f"'tool_choice' of type {kind!r} is not served here: use 'auto', 'none', 'required', "
                     "a function of this request's tools, or 'code_interpreter'")


def _text(text: dict) -> dict:
    shape = text.get("format")
    if shape is not None:
        kind = shape.get("type") if isinstance(shape, dict) else None
        if kind not in _FORMATS:
            raise ValueError(f"'text.format.type' must be one of {', '.join(_FORMATS)}")
        if kind == "json_schema" and not (isinstance(shape.get("name"), str) and shape["name"]
                                          and isinstance(shape.get("schema"), dict)):
            raise ValueError("'text.format' of type json_schema needs a 'name' and a 'schema' object")
    if text.get("verbosity") is not None and text["verbosity"] not in ("low", "medium", "high"):
        raise ValueError("'text.verbosity' must be low, medium or high")
    return text
