"""`hyperlight` back end: code in a Hyperlight micro-VM, one fresh worker process per execution.

`hyperlight-nanvix` (Python and JavaScript in a Nanvix micro-VM) is used when installed, otherwise the PyPI
`hyperlight-sandbox` (Wasm Python guest; JavaScript through its HyperlightJS backend when that is installed).
The native calls run in `hyperlight_worker.py`, a child process with an empty environment in its own process
group, killed whole at the deadline: a guest or a VM start that never returns cannot hang the server.

A session (`open_session`) keeps one hyperlight-sandbox Sandbox, and so its micro-VM, alive in one worker process
between executions instead of building a fresh one each time. A guest cannot be interrupted, so a cell that
overruns the timeout kills the worker and the session's state with it (the result's notice says so). Where no
micro-VM can start (e.g. KVM nested inside a VM that does not pass it through), `open_session` raises
SandboxUnavailable with the library's own reason, and `doctor` says so.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .hyperlight_worker import UNAVAILABLE
from .output import CappedBuffer, result
from .types import (
    LANGUAGES,
    TIMEOUT_EXIT_CODE,
    BackendReport,
    ExecutionResult,
    FileInfo,
    Layer,
    Limits,
    SandboxUnavailable,
)

NAME = "hyperlight"
WORKER = str(Path(__file__).with_name("hyperlight_worker.py"))
PROBE_TIMEOUT_SECONDS = 15.0
_READ_CHUNK = 65536
_SESSION_LINE_LIMIT = 64 * 1024 * 1024  # one reply line holds a cell's whole stdout and stderr (JSON)
_NO_FILES = "hyperlight sessions have no session directory: the guest sees no host files"


def implementation() -> str:
    """The installed library this back end drives."""
    return "hyperlight-nanvix" if importlib.util.find_spec("hyperlight_nanvix") else "hyperlight-sandbox"


def languages() -> tuple[str, ...]:
    """Languages the installed packages provide a guest for."""
    if implementation() == "hyperlight-nanvix":
        return LANGUAGES
    found = [importlib.util.find_spec("python_guest") and "python"]
    found.append(importlib.util.find_spec("hyperlight_sandbox_backend_hyperlight_js") and "javascript")
    return tuple(lang for lang in found if lang)


def _request(code: str, language: str, limits: Limits) -> bytes:
    # Hyperlight's scratch region ("stack") must grow with the heap, or the sandbox refuses to build.
    stack_mb = max(35, limits.memory_mb // 8 + 64)
    return json.dumps({"code": code, "language": language, "heap_mb": limits.memory_mb, "stack_mb": stack_mb}).encode()


def _worker_argv() -> list[str]:
    return [sys.executable, "-I", WORKER]


def _worker_env() -> dict[str, str]:
    """Nothing of the server's environment; HOME only, where the guest packages cache their images."""
    return {"HOME": os.environ.get("HOME", "/")}


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    stream.write(data)
    await stream.drain()
    stream.close()


async def _drain(stream: asyncio.StreamReader, sink: CappedBuffer) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        sink.write(chunk)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _session_config(language: str, limits: Limits) -> dict:
    request = json.loads(_request("", language, limits))
    del request["code"]
    return request


class HyperlightSession:
    """One Sandbox kept alive in one worker process (see the module docstring); no files."""

    sandbox = NAME

    def __init__(self, limits: Limits, proc: asyncio.subprocess.Process) -> None:
        self.id = uuid.uuid4().hex
        self.limits, self._proc = limits, proc
        self._stderr = CappedBuffer(4096)
        self._drain = asyncio.ensure_future(_drain(proc.stderr, self._stderr))
        self._alive = True

    @classmethod
    async def open(cls, language: str, limits: Limits) -> "HyperlightSession":
        try:
            proc = await asyncio.create_subprocess_exec(
                *_worker_argv(), "--session", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_worker_env(), start_new_session=True, limit=_SESSION_LINE_LIMIT)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start the hyperlight worker: {exc}") from None
        session = cls(limits, proc)
        try:
            proc.stdin.write(json.dumps(_session_config(language, limits)).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), PROBE_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, ConnectionError):
            line = b""
        reply = json.loads(line) if line.strip() else {}
        if not reply.get("ready"):
            await session.close()
            reason = reply.get("error") or session._stderr.text().strip() or "the worker did not start a sandbox"
            raise SandboxUnavailable(reason.removeprefix(UNAVAILABLE))
        return session

    @property
    def alive(self) -> bool:
        return self._alive and self._proc.returncode is None

    async def run(self, code: str) -> ExecutionResult:
        started = time.perf_counter()
        stdout = CappedBuffer(self.limits.max_output_bytes)
        stderr = CappedBuffer(self.limits.max_output_bytes)
        if not self.alive:
            stderr.write(b"this session has ended; open a new one\n")
            return result(NAME, stdout, stderr, 1, False, started)
        try:
            self._proc.stdin.write(json.dumps({"code": code}).encode() + b"\n")
            await self._proc.stdin.drain()
            line = await asyncio.wait_for(self._proc.stdout.readline(), self.limits.timeout_seconds)
        except asyncio.TimeoutError:
            await self.close()
            stderr.write(f"\nexecution timed out after {self.limits.timeout_seconds:g} s\n".encode())
            out = result(NAME, stdout, stderr, TIMEOUT_EXIT_CODE, True, started)
            out.notice = ("A Hyperlight guest cannot be interrupted, so the timeout ended this session and its state "
                          "was lost.")
            return out
        except (ConnectionError, ValueError):  # ValueError: a reply line past the limit
            line = b""
        if not line:
            await self.close()
            stderr.write(f"the hyperlight worker died: {self._stderr.text().strip()}\n".encode())
            out = result(NAME, stdout, stderr, 1, False, started)
            out.notice = "The sandbox crashed, so this session ended and its state was lost."
            return out
        reply = json.loads(line)
        stdout.write(reply["stdout"].encode("utf-8", "replace"))
        stderr.write(reply["stderr"].encode("utf-8", "replace"))
        exit_code = reply["exit_code"] if 0 <= reply["exit_code"] < 256 else 1
        return result(NAME, stdout, stderr, exit_code, False, started)

    async def upload(self, name: str, data: bytes) -> FileInfo:
        raise SandboxUnavailable(_NO_FILES)

    async def files(self) -> list[FileInfo]:
        return []

    async def read(self, name: str) -> bytes:
        raise FileNotFoundError(f"{name}: {_NO_FILES}")

    async def open_file(self, name: str):
        raise FileNotFoundError(f"{name}: {_NO_FILES}")

    async def delete(self, name: str) -> None:
        raise FileNotFoundError(f"{name}: {_NO_FILES}")

    async def close(self) -> None:
        self._alive = False
        if self._proc.returncode is None:
            _kill(self._proc)
            await self._proc.wait()
        await self._drain


class Backend:
    """Runs each snippet in a new Hyperlight sandbox inside a new worker process; sessions keep one alive."""

    name = NAME

    def __init__(self, limits: Limits, language: str = "python") -> None:
        self.limits = limits
        self.language = language

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        started = time.perf_counter()
        language = language or self.language
        stdout = CappedBuffer(self.limits.max_output_bytes)
        stderr = CappedBuffer(self.limits.max_output_bytes)
        if language not in LANGUAGES:
            stderr.write(f"the hyperlight sandbox runs {' and '.join(LANGUAGES)}, not {language!r}\n".encode())
            return result(NAME, stdout, stderr, 1, False, started)

        try:
            proc = await asyncio.create_subprocess_exec(
                *_worker_argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_worker_env(),
                start_new_session=True,
            )
        except OSError as exc:
            stderr.write(f"{UNAVAILABLE}cannot start the worker: {exc}\n".encode())
            return result(NAME, stdout, stderr, 1, False, started)
        timed_out = False
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    _feed(proc.stdin, _request(code, language, self.limits)),
                    _drain(proc.stdout, stdout),
                    _drain(proc.stderr, stderr),
                    proc.wait(),
                ),
                timeout=self.limits.timeout_seconds,
            )
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                _kill(proc)
                await proc.wait()
        if timed_out:
            stderr.write(f"\nexecution timed out after {self.limits.timeout_seconds:g} s\n".encode())
            return result(NAME, stdout, stderr, TIMEOUT_EXIT_CODE, True, started)
        exit_code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return result(NAME, stdout, stderr, exit_code, False, started)

    async def open_session(self, language: str | None = None, limits: Limits | None = None,
                           first_cell: str | None = None) -> HyperlightSession:
        """A Sandbox kept between executions; SandboxUnavailable with the library's reason where none can start."""
        language = language or self.language
        if language not in LANGUAGES:
            raise SandboxUnavailable(f"the hyperlight sandbox runs {' and '.join(LANGUAGES)}, not {language!r}")
        reason = await asyncio.get_running_loop().run_in_executor(None, session_support)  # probe() blocks once
        if reason is not None:
            raise SandboxUnavailable(f"hyperlight keeps no sessions here: {reason}")
        return await HyperlightSession.open(language, limits or self.limits)

    async def close(self) -> None:
        """Sessions are closed by their owner (the session manager); one-shot runs leave nothing behind."""


@functools.lru_cache(maxsize=None)
def probe() -> str | None:
    """Run `print(1)` through the real API once per process, bounded in time; None when it works, else why not."""
    try:
        done = subprocess.run(
            _worker_argv(),
            input=_request("print(1)", "python", Limits()),
            capture_output=True,
            env=_worker_env(),
            timeout=PROBE_TIMEOUT_SECONDS,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return f"print(1) did not finish within {PROBE_TIMEOUT_SECONDS:g} s"
    if done.returncode == 0 and done.stdout == b"1\n":
        return None
    reason = done.stderr.decode("utf-8", "replace").strip() or f"worker exited {done.returncode}"
    return reason.removeprefix(UNAVAILABLE)


def session_support() -> str | None:
    """None when sessions can run here, else why not (the library's own reason when no micro-VM starts)."""
    if implementation() == "hyperlight-nanvix":
        return "hyperlight-nanvix runs each workload in a fresh micro-VM, so it keeps no session state"
    return probe()


def report(limits: Limits) -> BackendReport:
    """Whether a real Hyperlight sandbox runs `print(1)` here, with the library's own reason when not."""
    reason = probe()
    usable = reason is None
    impl = implementation()
    kvm = "/dev/kvm present" if os.path.exists("/dev/kvm") else "no /dev/kvm"
    guest = "Nanvix microkernel guest" if impl == "hyperlight-nanvix" else "Wasm component guest (wasmtime)"
    memory = "Nanvix defaults" if impl == "hyperlight-nanvix" else f"guest heap {limits.memory_mb} MiB"
    return BackendReport(
        name=NAME,
        usable=usable,
        detail=f"{impl}: {'print(1) ran in a micro-VM' if usable else reason}",
        languages=languages(),
        layers=[
            Layer("micro-VM", usable, f"Hyperlight VM on KVM ({kvm}); no host filesystem or network is mapped in"),
            Layer("guest runtime", usable, guest),
            Layer(
                "worker process",
                True,
                "a fresh process per execution with an empty environment, its process group killed at the "
                f"{limits.timeout_seconds:g} s timeout",
            ),
            Layer("memory", usable, memory),
            Layer("sessions", session_support() is None,
                  "a session keeps one Sandbox (its micro-VM) alive in its own worker between executions; a timeout "
                  "ends it" if session_support() is None else f"no sessions: {session_support()}"),
            Layer("output cap", True, f"stdout and stderr capped at {limits.max_output_bytes} bytes each"),
        ],
    )
