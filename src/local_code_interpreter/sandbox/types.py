"""The contract every sandbox back end honours: limits in, one result out, a self-report for `doctor`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

LANGUAGES = ("python", "javascript")
TIMEOUT_EXIT_CODE = 124  # what timeout(1) returns


class SandboxUnavailable(RuntimeError):
    """The back end cannot run on this host; the message says why."""


@dataclass(frozen=True)
class Limits:
    """Per-execution limits, shared by every back end that can enforce them."""

    timeout_seconds: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 65536
    scratch_mb: int = 64
    max_processes: int = 32
    max_open_files: int = 64


@dataclass
class ExecutionResult:
    """What one execution produced; `stdout`/`stderr` are already capped and decoded."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0
    sandbox: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Layer:
    """One isolation layer as detected on this host."""

    name: str
    active: bool
    detail: str


@dataclass
class BackendReport:
    """What `doctor` prints for one back end."""

    name: str
    usable: bool
    detail: str
    languages: tuple[str, ...] = ()
    layers: list[Layer] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Sandbox(Protocol):
    """A back end: runs code once per call, in isolation, within `Limits`."""

    name: str

    async def run(self, code: str, language: str | None = None) -> ExecutionResult: ...

    async def close(self) -> None: ...
