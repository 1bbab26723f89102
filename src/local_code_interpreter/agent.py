"""The agent: instructions, the `execute_code` tool, and the chat client chosen by the settings."""

from __future__ import annotations

from typing import Any

from agent_framework import Agent

from .replies import BusyAborts, SafeReplies
from .sandbox import Sandbox
from .tool import make_execute_code

AGENT_NAME = "local-code-interpreter"
INSTRUCTIONS = """You are a careful assistant with a Python code interpreter.
When a question needs computation, data handling or checking, write a complete Python program and run it
with the execute_code tool; print the values you need. Each run starts fresh, with no network access and
only a temporary working directory. Answer from the tool's real output; if it fails, fix the code and retry."""


def build_agent(chat_client: Any, sandbox: Sandbox) -> Agent:
    return Agent(
        client=chat_client,
        name=AGENT_NAME,
        description="Runs Python in a sandbox to answer questions.",
        instructions=INSTRUCTIONS,
        tools=[make_execute_code(sandbox)],
        middleware=[SafeReplies(), BusyAborts()],
    )
