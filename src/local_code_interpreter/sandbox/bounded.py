"""A concurrency gate in front of any back end."""

from __future__ import annotations

import asyncio

from .types import ExecutionResult, Sandbox


class Bounded:
    """At most `slots` executions at once on the wrapped back end; the rest wait their turn."""

    def __init__(self, backend: Sandbox, slots: int):
        self.backend, self.name = backend, backend.name
        self._slots = asyncio.Semaphore(slots)

    async def start(self) -> None:
        start = getattr(self.backend, "start", None)
        if start is not None:
            await start()

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        async with self._slots:
            return await self.backend.run(code, language)

    async def close(self) -> None:
        await self.backend.close()
