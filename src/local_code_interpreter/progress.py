"""What an `execute_code` call tells whoever shows the run while it runs (the seam between the agent and a stream).

A streamed run's reader (the lean path's `http/tool_stream.py`) sets `REPORTER` around the run; `ReportsCalls`, a
function middleware of the agent, tells it when a call of the tool starts, by the call's id: the model has
finished writing the call and the sandbox is about to run it. Without a reader (a plain response, DevUI's page)
it does nothing. Output streamed while the code runs would be told the same way.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

from agent_framework import FunctionMiddleware

from .tool import TOOL_NAME


class Reporter(Protocol):
    def started(self, call_id: str) -> None:
        """The call `call_id` of the tool is about to run."""


REPORTER: ContextVar[Reporter | None] = ContextVar("lci_progress_reporter", default=None)


class ReportsCalls(FunctionMiddleware):
    """Tells the run's reader, if it has one, that an `execute_code` call starts."""

    async def process(self, context, call_next) -> None:
        reporter = REPORTER.get()
        if reporter is not None and context.function.name == TOOL_NAME:
            call_id = context.metadata.get("call_id")
            if isinstance(call_id, str):
                reporter.started(call_id)
        await call_next()
