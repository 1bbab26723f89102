"""Sandbox back ends behind one interface, looked up by name."""

from __future__ import annotations

import asyncio
import importlib

from .types import (
    LANGUAGES,
    TIMEOUT_EXIT_CODE,
    BackendReport,
    ExecutionResult,
    Layer,
    Limits,
    Sandbox,
    SandboxUnavailable,
)

# name -> module that defines `Backend` (the Sandbox class) and `report(limits)`.
BACKENDS = {
    "subprocess": "local_code_interpreter.sandbox.process",
    "monty": "local_code_interpreter.sandbox.monty",
    "hyperlight": "local_code_interpreter.sandbox.hyperlight",
}


def _module(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown sandbox {name!r}; choose one of: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


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


def create_sandbox(name: str, limits: Limits, language: str = "python", max_concurrency: int = 4) -> Bounded:
    """Build the named back end; `language` is the default language of its runs."""
    return Bounded(_module(name).Backend(limits, language=language), max_concurrency)


def report_all(limits: Limits) -> list[BackendReport]:
    """Every back end's self-report, for `doctor`."""
    return [_module(name).report(limits) for name in BACKENDS]


__all__ = [
    "BACKENDS",
    "LANGUAGES",
    "TIMEOUT_EXIT_CODE",
    "BackendReport",
    "Bounded",
    "ExecutionResult",
    "Layer",
    "Limits",
    "Sandbox",
    "SandboxUnavailable",
    "create_sandbox",
    "report_all",
]
