"""The `execute_code` tool: the one path from the agent to a sandbox."""

from __future__ import annotations

from typing import Annotated

from agent_framework import FunctionTool, tool
from pydantic import Field

from . import artifacts
from .sandbox import ExecutionResult, Sandbox, SandboxUnavailable

TOOL_NAME = "execute_code"


def format_result(result: ExecutionResult) -> str:
    """What the model (and the embedded default's user) reads back: output first, then how it ended."""
    parts = []
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr.rstrip()}")
    if result.timed_out:
        status = f"timed out (exit code {result.exit_code})"
    else:
        status = f"exit code {result.exit_code}"
    parts += artifacts.describe(result)
    parts.append(f"[{status}; {result.duration_ms:.0f} ms in the {result.sandbox} sandbox"
                 + ("; output truncated" if result.truncated else "") + "]")
    return "\n".join(parts)


def make_execute_code(sandbox: Sandbox) -> FunctionTool:
    """Bind the tool to one sandbox engine, shared by every conversation."""

    @tool(name=TOOL_NAME)
    async def execute_code(
        code: Annotated[str, Field(description="The complete program to run. Print what you want to see.")],
    ) -> str:
        """Run a program in an isolated sandbox and return its stdout, stderr and exit code.

        Every call starts fresh: no variables, files or network survive between calls.
        """
        try:
            result = await sandbox.run(code)
            artifacts.collect(result)  # images and files, shown in the reply by artifacts.ShowArtifacts
            return format_result(result)
        except SandboxUnavailable as error:
            return f"[the sandbox could not run this code: {error}]"

    return execute_code
