"""The embedded default chat client: no model, yet the same agent, tool and sandbox path.

A user message that holds code (a fenced block, or the whole message) becomes a call to `execute_code`;
the tool's answer becomes the reply (its text: `artifacts.ShowArtifacts` adds the images and file links for every
client), with a note that no model is configured. Within a conversation the tool runs in that conversation's
session, so `x = 41` then `print(x + 1)` prints 42.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agent_framework import (BaseChatClient, ChatResponse, ChatResponseUpdate, Content, FunctionInvocationLayer,
                             Message, ResponseStream)

from .attachments import user_text
from .tool import TOOL_NAME

NO_MODEL_NOTE = ("No model is configured, so this is the embedded default: it runs the code in your message as-is. "
                 "To chat with a model, set `AZURE_OPENAI_ENDPOINT` and `AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME` "
                 "(or `OPENAI_API_KEY`) and restart.")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The code in a message: every fenced block joined, else the whole message if it compiles as Python."""
    blocks = [body for _, body in _FENCE.findall(text)]
    if blocks:
        return "\n".join(blocks)
    stripped = text.strip()
    if not stripped:
        return None
    try:
        compile(stripped, "<message>", "exec")
    except (SyntaxError, ValueError):
        return None
    return stripped


def _reply(messages: Sequence[Message]) -> list[Content]:
    """Decide this turn: call the tool for fresh code, or report the tool's result."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "tool":
        results = [c for c in last.contents if c.type == "function_result"]
        output = "\n".join(str(c.result) for c in results)
        # The images the code drew are shown by artifacts.ShowArtifacts, for every client: not repeated here.
        return [Content.from_text(f"{output}\n\n{NO_MODEL_NOTE}")]
    text = user_text(last) if last is not None else ""  # without the notes about attached files
    code = extract_code(text or "")
    if code is None:
        return [Content.from_text("I found no code to run in your message. Send Python code, for example "
                                  "`print(6 * 7)`, or a fenced ```python block.\n\n" + NO_MODEL_NOTE)]
    return [Content.from_function_call(call_id=f"call_{uuid.uuid4().hex[:12]}", name=TOOL_NAME,
                                       arguments={"code": code})]


class _EmbeddedClient(BaseChatClient):
    OTEL_PROVIDER_NAME = "local-code-interpreter.embedded"

    def _inner_get_response(self, *, messages: Sequence[Message], stream: bool, options: Any, **kwargs: Any):
        contents = _reply(messages)
        response_id = f"resp_{uuid.uuid4().hex}"
        if not stream:
            async def respond() -> ChatResponse:
                return ChatResponse(messages=[Message(role="assistant", contents=contents)], response_id=response_id)
            return respond()

        async def updates() -> AsyncIterator[ChatResponseUpdate]:
            yield ChatResponseUpdate(role="assistant", contents=contents, response_id=response_id)

        return ResponseStream(updates(), finalizer=ChatResponse.from_updates)


class EmbeddedChatClient(FunctionInvocationLayer, _EmbeddedClient):
    """The embedded default, with the same function-invocation layer as the real clients."""
