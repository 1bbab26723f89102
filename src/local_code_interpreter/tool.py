"""The `execute_code` tool: the one path from the agent to a sandbox.

Inside a conversation (`conversation.conversation_key` set by the HTTP layer or the terminal chat) the code runs in
that conversation's session, so variables, imports and files persist between calls; outside one it runs once in
a fresh sandbox. Images the code produced are returned to the framework as image content next to the text.
"""

from __future__ import annotations

from typing import Annotated

from agent_framework import Content, FunctionTool, tool
from pydantic import Field

from .conversation import conversation_key
from .sandbox import ExecutionResult, Sandbox, SandboxUnavailable
from .sessions import SessionManager

TOOL_NAME = "execute_code"


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def format_result(result: ExecutionResult) -> str:
    """What the model (and the embedded default's user) reads back: what happened to the session, the output,
    the value of a last expression, images and files produced, then how it ended."""
    parts = []
    if result.notice:
        parts.append(f"note: {result.notice}")
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr.rstrip()}")
    if result.value is not None:
        parts.append(f"value:\n{result.value}")
    if result.images:
        kinds = ", ".join(f"image {n} ({image.media_type}, {_size(len(image.data))})"
                          for n, image in enumerate(result.images, 1))
        parts.append(f"images: {len(result.images)} captured and attached: {kinds}")
    if result.files:
        listed = ", ".join(f"{info.name} ({_size(info.size)}, {info.media_type})" for info in result.files)
        parts.append(f"files created or changed: {listed}")
    if result.timed_out:
        status = f"timed out (exit code {result.exit_code})"
    else:
        status = f"exit code {result.exit_code}"
    parts.append(f"[{status}; {result.duration_ms:.0f} ms in the {result.sandbox} sandbox"
                 + ("; output truncated" if result.truncated else "") + "]")
    return "\n".join(parts)


def tool_output(result: ExecutionResult) -> str | list[Content]:
    """The text, plus each image as data content when there are images.

    Agent Framework keeps a list of Content as the function result's `items` (`FunctionTool.parse_result`); the
    OpenAI Responses client sends them to the model as `input_text`/`input_image` parts of the
    `function_call_output`. Clients without rich tool output use the text only, which names the images.
    """
    text = format_result(result)
    if not result.images:
        return text
    return [Content.from_text(text), *(Content.from_data(image.data, image.media_type) for image in result.images)]


async def execute(sandbox: Sandbox, sessions: SessionManager | None, code: str) -> ExecutionResult:
    """Run `code` in the current conversation's session, or once when there is no conversation (or no manager).
    A back end that cannot keep sessions runs it once and says so in the result's notice."""
    key = conversation_key.get()
    if key is None or sessions is None:
        return await sandbox.run(code)
    try:
        return await sessions.run(key, code)
    except SandboxUnavailable as error:
        result = await sandbox.run(code)
        result.notice = (f"This sandbox cannot keep state between executions ({error}); the code ran in a fresh "
                         "sandbox, so define everything it needs in the same program.")
        return result


def make_execute_code(sandbox: Sandbox, sessions: SessionManager | None = None) -> FunctionTool:
    """Bind the tool to one sandbox engine (and its session manager), shared by every conversation."""

    @tool(name=TOOL_NAME)
    async def execute_code(
        code: Annotated[str, Field(description="Python code to run. Print what you want to see; the value of a "
                                               "last bare expression is shown too.")],
    ) -> str | list[Content]:
        """Run Python in an isolated sandbox and return its stdout, stderr, last value, images and files.

        Within one conversation the sandbox is a live session: variables, imports, functions and files from
        earlier calls are still there. Matplotlib figures are captured as images automatically.
        """
        # SandboxBusy is not caught: it aborts the run so the HTTP layer answers 429 and the client retries.
        try:
            return tool_output(await execute(sandbox, sessions, code))
        except SandboxUnavailable as error:
            return f"[the sandbox could not run this code: {error}]"

    return execute_code
