"""The one ASGI layer in front of every route (DevUI, the lean `/v1/responses`, `/health`, `/ready`, mounted apps):
Host check, authentication before any body is read, body size limit, the caller in the scope, one access-log
line per request, and never a bare 500 page.

Verifiers are `async (token) -> Caller | None`; the first that recognises the bearer token names the caller. A
verifier that recognises a valid token whose identity is not allowed raises `Refused` (403). Built in: the DevUI
token (`identity.TOKEN`). A loopback bind without a configured token accepts callers without a (recognised)
token as `identity.LOCAL`. More verifiers (Microsoft Entra ID) are passed in, for every path or for a prefix.

Errors are written in the OpenAI API's shape, or, under a prefix given an `ErrorSender` (the sessions API), in
that API's own.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Awaitable, Callable, Iterable
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import identity
from ..fair import OWNER, Budget
from ..identity import Refused
from ..logs import ACCESS
from .errors import send_error

log = logging.getLogger(__name__)
Verifier = Callable[[str], Awaitable["identity.Caller | None"]]


class ErrorSender(Protocol):
    """Writes an error response in one API's shape (`errors.send_error`, `aca.send_aca_error`)."""

    def __call__(self, send: Send, status: int, message: str, code: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> Awaitable[None]: ...


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# Served without authentication: probes, and the DevUI page's static shell (its API calls carry the token).
PUBLIC_PATHS = frozenset({"/health", "/ready", "/", "/index.html", "/agentframework.svg", "/favicon.ico"})
PUBLIC_PREFIXES = ("/assets/",)
QUIET_PATHS = frozenset({"/health", "/ready"})  # probes: access-logged at DEBUG only


def token_verifier(token: str) -> Verifier:
    """The shared DevUI bearer token, compared in constant time."""
    expected = token.encode()

    async def verify(presented: str) -> identity.Caller | None:
        return identity.TOKEN if secrets.compare_digest(presented.encode(), expected) else None

    return verify


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: ASGIApp, *, verifiers: Iterable[Verifier] = (), allow_local: bool = False,
                 allowed_hosts: frozenset[str] | None = None, max_body_bytes: int = 1024 * 1024,
                 access_log: bool = True, self_authenticating: Iterable[str] = (),
                 body_limits: Mapping[str, int] | None = None,
                 scoped_verifiers: Mapping[str, Iterable[Verifier]] | None = None,
                 error_senders: Mapping[str, ErrorSender] | None = None, bodies_in_flight: int = 0):
        self.app = app
        # Path prefix -> how errors are written there (an API with its own error shape); else the OpenAI shape.
        self.error_senders = tuple((error_senders or {}).items())
        # Path prefix -> verifiers accepted there only (Microsoft Entra ID tokens open the sessions API, not the
        # DevUI or /v1/responses).
        self.scoped_verifiers = tuple((prefix, list(found)) for prefix, found in (scoped_verifiers or {}).items())
        # Path prefix -> body limit for apps that take larger bodies and enforce their own caps (the sessions
        # API's uploads); everything else gets `max_body_bytes`.
        self.body_limits = tuple((body_limits or {}).items())
        # Path prefixes whose app checks its own credential when the request has no recognised bearer token
        # (the download route's signed links): GET/HEAD only, and the app sees no caller in the scope.
        self.self_authenticating = tuple(self_authenticating)
        self.verifiers = list(verifiers)
        self.allow_local = allow_local
        self.allowed_hosts = allowed_hosts
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        # Request bodies being received at once, all callers together (default: twice the largest a route
        # accepts), half of that for one caller (fair.Budget). Bodies are held in memory and uploads spooled to
        # /tmp until the request ends: without this, many large bodies at once could exhaust the replica's memory
        # or disk (settings.bodies_in_flight_bytes, which the disk budget keeps room for).
        self.bodies = Budget(bodies_in_flight or 2 * max([max_body_bytes, *(size for _, size in self.body_limits)]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # websockets: not served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        started = time.perf_counter()
        status = 0
        started_response = False

        async def tracked_send(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
            await send(message)

        caller = None
        try:
            caller = await self._handle(scope, receive, tracked_send)
        except Exception:  # noqa: BLE001 - the client gets an error in the API's shape, the log the traceback
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if not started_response:
                await self._sender(scope["path"])(tracked_send, 500, "internal error: see the server log",
                                                  "server_error")
        finally:
            if self.access_log:
                level = logging.DEBUG if scope["path"] in QUIET_PATHS and status == 200 else logging.INFO
                if ACCESS.isEnabledFor(level):
                    ms = (time.perf_counter() - started) * 1000
                    who = caller.id if caller is not None else "-"
                    ACCESS.log(level, "%s %s %d %.1fms %s", scope["method"], scope["path"], status or 499, ms, who,
                               extra={"method": scope["method"], "path": scope["path"], "status": status or 499,
                                      "duration_ms": round(ms, 2), "caller": who})

    def _sender(self, path: str) -> ErrorSender:
        return next((sender for prefix, sender in self.error_senders if path.startswith(prefix)), send_error)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> identity.Caller | None:
        headers = scope["headers"]
        send_error = self._sender(scope["path"])
        if self.allowed_hosts is not None:
            host = _header(headers, b"host").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if host and name.lower() not in self.allowed_hosts:  # no Host (HTTP/1.0): nothing to rebind
                await send_error(send, 400, f"Invalid Host header {host!r}: this server only answers requests "
                                 "addressed to it", "host_not_allowed")
                return None
        path = scope["path"]
        try:
            caller = await self._caller(headers, path)
        except Refused as refused:
            await send_error(send, refused.status, refused.message, "forbidden")
            return None
        public = scope["method"] == "OPTIONS" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (
            scope["method"] in ("GET", "HEAD") and bool(self.self_authenticating)
            and path.startswith(self.self_authenticating))
        if caller is None and not public:
            missing = not _header(headers, b"authorization")
            await send_error(send, 401, "Missing or invalid Authorization header. Expected: Authorization: Bearer "
                             "<token>" if missing else "Invalid authentication token",
                             "missing_token" if missing else "invalid_token",
                             headers=[(b"www-authenticate", b"Bearer")])
            return None
        limit = next((size for prefix, size in self.body_limits if path.startswith(prefix)), self.max_body_bytes)
        declared = _header(headers, b"content-length")
        if declared:
            if not declared.isdigit():
                await send_error(send, 400, "Content-Length must be a number", "invalid_content_length")
                return caller
            if int(declared) > limit:
                await send_error(send, 413, f"request body larger than {limit} bytes", "request_too_large")
                return caller
        # A body is announced by Content-Length or Transfer-Encoding (RFC 9112 6.3); a streamed one may be as
        # large as the route allows.
        cost = int(declared) if declared else (limit if _header(headers, b"transfer-encoding") else 0)
        owner = caller.id if caller is not None else "-"
        if cost and not self.bodies.take(owner, cost):
            yours = self.bodies.held(owner) + cost > self.bodies.share
            await send_error(send, 429, f"too many request bodies are being received at once "
                             f"({'yours take' if yours else 'they take'} the replica's share of "
                             f"{self.bodies.share if yours else self.bodies.total} bytes); retry shortly",
                             "too_many_requests", headers=[(b"retry-after", b"1")])
            return caller
        scope[identity.SCOPE_KEY] = caller
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        responded = False

        async def watched_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        acting = OWNER.set(owner)  # sandbox work for this request is the caller's (the execution gate shares by it)
        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if not responded:
                await send_error(send, 413, f"request body larger than {limit} bytes", "request_too_large")
        finally:
            OWNER.reset(acting)
            if cost:
                self.bodies.give(owner, cost)
        return caller

    async def _caller(self, headers, path: str = "") -> identity.Caller | None:
        authorization = _header(headers, b"authorization").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            scoped = [v for prefix, found in self.scoped_verifiers if path.startswith(prefix) for v in found]
            for verify in [*self.verifiers, *scoped]:
                caller = await verify(token)
                if caller is not None:
                    return caller
        return identity.LOCAL if self.allow_local else None


def _header(headers, name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""
