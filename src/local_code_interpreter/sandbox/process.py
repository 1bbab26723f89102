"""The `subprocess` back end: full CPython, one fresh confined process per execution, forked from a warm parent."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import time
from dataclasses import asdict

from . import isolation, landlock
from .forkserver import read_frames, send_frame
from .types import BackendReport, ExecutionResult, Limits, SandboxUnavailable

NAME = "subprocess"


class Backend:
    """Talks to one fork server; starts it on first use and again if it ever dies."""

    name = NAME

    def __init__(self, limits: Limits, language: str = "python"):
        self.limits = limits
        self.language = language
        self._ids = itertools.count()
        self._pending: dict[str, asyncio.Future] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task | None = None
        self._starting: asyncio.Lock | None = None

    async def start(self) -> None:
        """Start the warm parent now rather than on the first execution."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._process is not None and self._process.returncode is None:
                return
            mine, theirs = socket.socketpair()
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-X", "utf8", "-m", "local_code_interpreter.sandbox.forkserver",
                str(theirs.fileno()), env={}, pass_fds=(theirs.fileno(),), cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            )
            theirs.close()
            mine.setblocking(False)
            self._sock = mine
            self._reader = asyncio.get_running_loop().create_task(self._read_results(mine))

    async def run(self, code: str, language: str | None = None) -> ExecutionResult:
        language = language or self.language
        if language != "python":
            raise SandboxUnavailable(f"the subprocess sandbox runs Python only, not {language}")
        await self.start()
        request_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        started = time.perf_counter()
        send_frame_nowait(self._sock, {"id": request_id, "code": code, "limits": asdict(self.limits)})
        try:
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        reply.pop("id")
        if "error" in reply:
            raise SandboxUnavailable(reply["error"])
        reply["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return ExecutionResult(sandbox=NAME, **reply)

    async def _read_results(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while True:
            try:
                chunk = await loop.sock_recv(sock, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            for reply in read_frames(buffer):
                future = self._pending.get(reply["id"])
                if future is not None and not future.done():
                    future.set_result(reply)
        # The fork server died (or was told to stop): fail what was in flight, restart on the next call.
        for request_id, future in list(self._pending.items()):
            if not future.done():
                future.set_result({"id": request_id, "error": "the sandbox's fork server stopped; try again"})
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), 2)
            except asyncio.TimeoutError:
                self._process.kill()
        if self._reader is not None:
            self._reader.cancel()


def send_frame_nowait(sock: socket.socket, message: dict) -> None:
    """Frames are small next to the socket buffer; a blocking send here would only ever wait briefly."""
    sock.setblocking(True)
    try:
        send_frame(sock, message)
    finally:
        sock.setblocking(False)


def report(limits: Limits) -> BackendReport:
    abi = landlock.abi_version()
    linux = sys.platform.startswith("linux")
    return BackendReport(
        name=NAME,
        usable=linux and hasattr(os, "fork"),
        detail="CPython " + sys.version.split()[0] + (" with a warm fork server" if linux else ": needs Linux"),
        languages=("python",),
        layers=isolation.detect(limits, abi),
    )
