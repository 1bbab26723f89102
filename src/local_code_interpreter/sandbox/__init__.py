"""Sandbox back ends behind one interface, looked up by name."""

from __future__ import annotations

import importlib

from .types import (
    LANGUAGES,
    TIMEOUT_EXIT_CODE,
    BackendReport,
    ExecutionResult,
    FileInfo,
    Image,
    InvalidFileName,
    Layer,
    Limits,
    QuotaExceeded,
    Sandbox,
    SandboxBusy,
    SandboxUnavailable,
    Session,
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


def create_sandbox(name: str, limits: Limits, language: str = "python", max_concurrency: int = 4,
                   queue_timeout_seconds: float = 30.0, queue_length: int = 64) -> Sandbox:
    """Build the named back end, at most `max_concurrency` runs at once; `language` is its default language.

    Callers past the bound wait at most `queue_timeout_seconds`, and at most `queue_length` of them wait;
    past either, `SandboxBusy`.
    """
    from .bounded import Bounded  # asyncio stays out of the template, which imports this package

    return Bounded(_module(name).Backend(limits, language=language), max_concurrency,
                   queue_timeout=queue_timeout_seconds, queue_length=queue_length)


def sandbox_descriptors(name: str, max_sessions: int, max_concurrency: int) -> int:
    """File descriptors the named back end may hold open in the server with `max_sessions` live sessions and
    `max_concurrency` runs at once (0 when it holds none); the server's connection cap leaves room for them."""
    descriptors = getattr(_module(name), "descriptors", None)
    return descriptors(max_sessions, max_concurrency) if descriptors is not None else 0


def report_all(limits: Limits) -> list[BackendReport]:
    """Every back end's self-report, for `doctor`."""
    return [_module(name).report(limits) for name in BACKENDS]


__all__ = [
    "BACKENDS",
    "LANGUAGES",
    "TIMEOUT_EXIT_CODE",
    "BackendReport",
    "ExecutionResult",
    "FileInfo",
    "Image",
    "InvalidFileName",
    "Layer",
    "Limits",
    "QuotaExceeded",
    "Sandbox",
    "SandboxBusy",
    "SandboxUnavailable",
    "Session",
    "create_sandbox",
    "report_all",
    "sandbox_descriptors",
]
