"""The agent: instructions, the `execute_code` tool, and the chat client chosen by the settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_framework import Agent, InMemoryHistoryProvider

from .progress import ReportsCalls
from .replies import BusyAborts, SafeReplies
from .sandbox import Sandbox
from .sessions import SessionManager
from .stopping import StopsAfterCalls
from .tool import make_execute_code

AGENT_NAME = "local-code-interpreter"
INSTRUCTIONS = """You are a careful assistant with a Python code interpreter.
When a question needs computation, data handling or checking, write Python and run it with the execute_code
tool; print the values you need (the value of a last bare expression is shown too). Within this conversation
the interpreter is a live session: variables, imports, functions and files in its working directory persist
from one call to the next, so build on earlier results instead of repeating them. Files the user attached are
in the working directory, by name. Matplotlib figures are captured and shown automatically; you need not save
them. There is no network access. If the tool's reply says a fresh session was started, earlier state is gone:
recreate what you need. Answer from the tool's real output; if it fails, fix the code and retry."""


def build_agent(chat_client: Any, sandbox: Sandbox, sessions: SessionManager | None = None,
                middleware: Sequence[Any] = ()) -> Agent:
    """The agent; with `sessions`, each conversation (`conversation.conversation_key`) keeps one session.
    `middleware`: agent middleware the serving path adds (attachments, artifacts), inside SafeReplies."""
    return Agent(
        client=chat_client,
        name=AGENT_NAME,
        description="Runs Python in a sandbox to answer questions.",
        instructions=INSTRUCTIONS,
        tools=[make_execute_code(sandbox, sessions)],
        middleware=[SafeReplies(), StopsAfterCalls(), BusyAborts(), ReportsCalls(), *middleware],
        # Where a run's session keeps its history. DevUI passes each page conversation's session (the framework
        # would add this provider on that first run; here it is there from the start, whoever runs first). The
        # lean /v1/responses path sends the history itself and passes a fresh session per run (http/responses.py).
        context_providers=[InMemoryHistoryProvider()],
    )
