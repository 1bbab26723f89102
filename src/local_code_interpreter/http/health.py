"""`/health` (liveness: the process answers; no work) and `/ready` (readiness: the configured sandbox can run code).

`/ready` answers from a cached self-check — a tiny program run through the configured back end, exactly as an
execution would be — refreshed in the background when older than `ok_ttl` (or `fail_ttl` after a failure), so a
probe costs a dictionary lookup. The first probe waits for the first check. 200 `{"status": "ready", ...}`;
503 `{"status": "unavailable", "reason": ...}` with the back end's own reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time

from starlette.types import Receive, Scope, Send

from ..sandbox import SandboxUnavailable

log = logging.getLogger(__name__)


class Readiness:
    def __init__(self, sandbox, ok_ttl: float = 30.0, fail_ttl: float = 5.0, timeout: float = 30.0):
        self.sandbox, self.ok_ttl, self.fail_ttl, self.timeout = sandbox, ok_ttl, fail_ttl, timeout
        self.state: dict | None = None
        self._checked_at = 0.0
        self._running: asyncio.Task | None = None

    async def check(self) -> dict:
        """Run the self-check now and cache its result."""
        nonce = secrets.token_hex(4)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.sandbox.run(f"print('ready-{nonce}')"), self.timeout)
        except SandboxUnavailable as error:
            state = {"status": "unavailable", "reason": str(error)}
        except asyncio.TimeoutError:
            state = {"status": "unavailable", "reason": f"the self-check did not finish within {self.timeout:g} s"}
        except Exception as error:  # noqa: BLE001 - any failure means not ready, with its reason
            state = {"status": "unavailable", "reason": f"{type(error).__name__}: {error}"}
        else:
            if result.exit_code == 0 and f"ready-{nonce}" in result.stdout:
                state = {"status": "ready"}
            else:
                detail = (result.stderr or result.stdout).strip().splitlines()
                state = {"status": "unavailable",
                         "reason": (detail[-1] if detail else f"exit code {result.exit_code}")[:1000]}
        state.update(sandbox=getattr(self.sandbox, "name", "?"),
                     check_ms=round((time.perf_counter() - started) * 1000, 1), checked_at=int(time.time()))
        if (self.state or {}).get("status") != state["status"]:
            log.log(logging.INFO if state["status"] == "ready" else logging.WARNING, "readiness: %s%s",
                    state["status"], f" ({state['reason']})" if "reason" in state else "")
        self.state, self._checked_at = state, time.monotonic()
        return state

    async def current(self) -> dict:
        if self.state is None:
            await self._refresh()
            return self.state or {"status": "unavailable", "reason": "not checked yet"}
        ttl = self.ok_ttl if self.state["status"] == "ready" else self.fail_ttl
        if time.monotonic() - self._checked_at > ttl and (self._running is None or self._running.done()):
            self._running = asyncio.create_task(self.check())
        return self.state

    async def _refresh(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self.check())
        await asyncio.shield(self._running)

    def stop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()


class HealthApp:
    """Serves GET/HEAD `/health` and `/ready`."""

    def __init__(self, readiness: Readiness):
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await _json(send, 405, {"error": {"message": "use GET", "type": "invalid_request_error",
                                                     "code": "method_not_allowed", "param": None}})
        if scope["path"] == "/health":
            return await _json(send, 200, {"status": "healthy"})
        state = await self.readiness.current()
        await _json(send, 200 if state["status"] == "ready" else 503, state)


async def _json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
