"""The contract every sandbox back end honours: limits in, one result out, a self-report for `doctor`."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .files import OpenedFile

LANGUAGES = ("python", "javascript")
TIMEOUT_EXIT_CODE = 124  # what timeout(1) returns


class SandboxUnavailable(RuntimeError):
    """The back end cannot run on this host; the message says why."""


class SandboxBusy(RuntimeError):
    """Every slot is taken and the wait for one ran out (or the queue is full): retry later (HTTP 429)."""


class InvalidFileName(ValueError):
    """A file name that is absolute, climbs out with `..`, holds NUL or is otherwise unusable (HTTP 400)."""


class QuotaExceeded(RuntimeError):
    """An upload (or what a session accumulated) would pass the session's disk quota or the upload cap (413)."""


@dataclass(frozen=True)
class Limits:
    """Per-execution limits, shared by every back end that can enforce them."""

    timeout_seconds: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 65536
    scratch_mb: int = 64
    max_processes: int = 32
    max_open_files: int = 64


@dataclass(frozen=True)
class FileInfo:
    """One file of a session directory. `name` is relative to it, '/'-separated; `modified` is epoch seconds."""

    name: str
    size: int
    modified: float
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Image:
    """An image the code produced (a matplotlib figure is captured as PNG without `savefig`)."""

    media_type: str
    data: bytes = field(repr=False)

    def to_dict(self) -> dict:
        return {"media_type": self.media_type, "data": base64.b64encode(self.data).decode("ascii")}


@dataclass
class ExecutionResult:
    """What one execution produced; `stdout`/`stderr` are already capped and decoded.

    Rich parts, where the back end supports them: `value` is the text (repr) of a last bare expression, as a
    REPL shows it (None when the code ends in a statement); `images` the figures it drew; `files` what it
    created or changed in the session directory. `notice` tells the caller about the session itself, e.g.
    that its state was lost (timeout past the grace period, crash) or that a fresh session was started.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0
    sandbox: str = ""
    value: str | None = None
    images: list[Image] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    notice: str = ""

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in ("stdout", "stderr", "exit_code", "timed_out", "truncated",
                                                     "duration_ms", "sandbox", "value", "notice")}
        data["images"] = [image.to_dict() for image in self.images]
        data["files"] = [asdict(info) for info in self.files]
        return data


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


class Session(Protocol):
    """One live interpreter and its own directory, kept between executions (variables, imports, files).

    At most one execution runs in a session at a time (callers serialise). When the code cannot be stopped
    within the grace period after a timeout, or the interpreter dies (segfault, `os._exit`, memory quota), the
    session ends: that execution's result says so in `notice`, and `alive` is False from then on. Nothing of an
    ended session (process, file, memory) outlives `close()`.
    """

    id: str
    sandbox: str

    @property
    def alive(self) -> bool: ...

    async def run(self, code: str) -> ExecutionResult: ...

    async def upload(self, name: str, data: bytes) -> FileInfo: ...  # InvalidFileName, QuotaExceeded

    async def files(self) -> list[FileInfo]: ...

    async def read(self, name: str) -> bytes: ...  # InvalidFileName, FileNotFoundError

    # For a download: its bytes read a piece at a time; the caller closes it.
    async def open_file(self, name: str) -> OpenedFile: ...  # InvalidFileName, FileNotFoundError

    async def delete(self, name: str) -> None: ...  # InvalidFileName, FileNotFoundError

    async def close(self) -> None: ...


class Sandbox(Protocol):
    """A back end: runs code once per call, in isolation, within `Limits`; opens sessions where it can."""

    name: str

    async def run(self, code: str, language: str | None = None) -> ExecutionResult: ...

    # SandboxUnavailable if it cannot. Back ends may also take `limits=` and `first_cell=` (the code the session
    # will run first, when known: the subprocess back end picks the template to fork from by it).
    async def open_session(self, language: str | None = None) -> Session: ...

    async def close(self) -> None: ...
