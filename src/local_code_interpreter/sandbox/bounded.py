"""A concurrency gate in front of any back end: one-shot runs and session executions share the same slots."""

from __future__ import annotations

import asyncio

from .types import ExecutionResult, FileInfo, Sandbox, SandboxUnavailable, Session


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

    async def open_session(self, language: str | None = None) -> Session:
        """A session of the wrapped back end whose executions take a slot like one-shot runs do."""
        opener = getattr(self.backend, "open_session", None)
        if opener is None:
            raise SandboxUnavailable(f"the {self.name} back end keeps no state between executions")
        return _BoundedSession(await opener(language), self._slots)

    async def close(self) -> None:
        await self.backend.close()


class _BoundedSession:
    """Delegates to the back end's session; only `run` waits for a slot (file operations run no code)."""

    def __init__(self, inner: Session, slots: asyncio.Semaphore) -> None:
        self.inner, self._slots = inner, slots
        self.id, self.sandbox = inner.id, inner.sandbox

    @property
    def alive(self) -> bool:
        return self.inner.alive

    async def run(self, code: str) -> ExecutionResult:
        async with self._slots:
            return await self.inner.run(code)

    async def upload(self, name: str, data: bytes) -> FileInfo:
        return await self.inner.upload(name, data)

    async def files(self) -> list[FileInfo]:
        return await self.inner.files()

    async def read(self, name: str) -> bytes:
        return await self.inner.read(name)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)

    async def close(self) -> None:
        await self.inner.close()
