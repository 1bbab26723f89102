"""`hyperlight` back end: code in a Hyperlight micro-VM, one fresh worker process per execution.

`hyperlight-nanvix` (Python and JavaScript in a Nanvix micro-VM) is used when installed, otherwise the PyPI
`hyperlight-sandbox` (Wasm Python guest; JavaScript through its HyperlightJS backend when that is installed).
The native calls run in `hyperlight_worker.py`, a child process with an empty environment in its own process
group, killed whole at the deadline: a guest or a VM start that never returns cannot hang the server.
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
from pathlib import Path

from .hyperlight_worker import UNAVAILABLE
from .output import CappedBuffer, result
from .types import LANGUAGES, TIMEOUT_EXIT_CODE, BackendReport, ExecutionResult, Layer, Limits

NAME = "hyperlight"
WORKER = str(Path(__file__).with_name("hyperlight_worker.py"))
PROBE_TIMEOUT_SECONDS = 15.0
_READ_CHUNK = 65536


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


class Backend:
    """Runs each snippet in a new Hyperlight sandbox inside a new worker process."""

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

    async def close(self) -> None:
        """Nothing persists between executions."""


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
            Layer("output cap", True, f"stdout and stderr capped at {limits.max_output_bytes} bytes each"),
        ],
    )
