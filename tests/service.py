"""Start the real service as a process on a free loopback port, for tests that talk HTTP to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import IO

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the service must never inherit from the test runner: model settings and tokens.
_SCRUB = ("AZURE_", "OPENAI_", "DEVUI_AUTH_TOKEN", "LCI_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(extra)
    return env


def with_health_behind(host: str, port: int, request: bytes, timeout: float = 60) -> bytes:
    """Send `request` with `GET /health` pipelined behind it, on a connection of its own; what came back, read until
    the health answer is in (a request that swallowed the one behind it never gets there: the read fails)."""
    received = b""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(request + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        while b'"status": "healthy"' not in received:
            chunk = connection.recv(65536)
            assert chunk, received[-500:]
            received += chunk
    return received


@contextmanager
def running_service(env: dict[str, str] | None = None, host: str = "127.0.0.1", args: tuple[str, ...] = (),
                    ready_timeout: float = 30.0, *, log: IO[str] | None = None, preexec_fn=None):
    """Yield (base_url, process, seconds_to_healthy); stop it with SIGTERM at the end.

    The service's output goes to `log` (a text file open for reading too) when given, else to a pipe
    (`process.stdout`: read it once the service has stopped, or it may fill and block the service).
    `preexec_fn` runs in the child before exec (to set a resource limit, say).
    """
    port = free_port()
    command = [sys.executable, "-m", "local_code_interpreter", "--devui", "--host", host, "--port", str(port),
               "--no-browser", *args]
    started = time.monotonic()
    process = subprocess.Popen(command, env=clean_env() if env is None else env, cwd=ROOT,
                               stdout=subprocess.PIPE if log is None else log, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=preexec_fn)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if log is None else (log.seek(0), log.read())[1]
                raise RuntimeError(f"service exited with {process.returncode}: {output}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > ready_timeout:
                raise RuntimeError("service did not become healthy in time")
            time.sleep(0.05)
        yield base, process, time.monotonic() - started
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
