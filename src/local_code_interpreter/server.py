"""DevUI serving: the agent behind the web page and `/v1/responses`, with auth, limits, health and shutdown."""

from __future__ import annotations

import asyncio
import json
import logging

import uvicorn
from agent_framework_devui import DevServer
from starlette.types import ASGIApp, Receive, Scope, Send

from .agent import AGENT_NAME, build_agent
from .models import build_chat_client
from .sandbox import create_sandbox
from .settings import ConfigError, Settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024


def check_auth(settings: Settings) -> None:
    """A non-loopback bind without a token would expose code execution to the network: refuse to start."""
    if not settings.loopback and not settings.auth_token:
        raise ConfigError(f"DEVUI_AUTH_TOKEN is required to listen on {settings.host} (not loopback): "
                          "set it to a long random secret, or bind to 127.0.0.1")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_error(send, 413, f"request body larger than {self.limit} bytes", "request_too_large")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await send_error(send, 413, f"request body larger than {self.limit} bytes", "request_too_large")


class _TooLarge(Exception):
    pass


async def send_error(send: Send, status: int, message: str, code: str) -> None:
    """An error in the OpenAI API's shape, so OpenAI clients show the message."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ResponsesGate:
    """Check `/v1/responses` requests before DevUI sees them, and route them to our one agent.

    Malformed JSON and empty input get a clear 400. DevUI gives in-memory entities a random id per process,
    which a client of several replicas cannot know: a request that names no entity (or names the agent,
    e.g. `model="local-code-interpreter"`) goes to the agent.
    """

    def __init__(self, app: ASGIApp, dev: DevServer):
        self.app, self.dev = app, dev

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/responses":
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = self._checked(bytes(body))
        except ValueError as error:
            return await send_error(send, 400, str(error), "invalid_request")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app(dict(scope, headers=headers), replay, send)

    def _checked(self, body: bytes) -> bytes:
        try:
            request = json.loads(body)
        except ValueError:
            raise ValueError("the request body must be a JSON object") from None
        if not isinstance(request, dict):
            raise ValueError("the request body must be a JSON object")
        if request.get("input") in (None, "", []) or (isinstance(request["input"], str) and not request["input"].strip()):
            raise ValueError("'input' is empty: send the message (for example code to run) as 'input'")
        metadata = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
        if metadata.get("entity_id") not in (None, AGENT_NAME) or self.dev.executor is None:
            return body
        entities = self.dev.executor.entity_discovery.list_entities()
        if len(entities) == 1:
            request["metadata"] = dict(metadata, entity_id=entities[0].id)
        return json.dumps(request).encode()


def build_app(settings: Settings, sandbox, manager=None) -> ASGIApp:
    """The DevUI app with our agent registered; with a SessionManager, the sessions API at /sessions."""
    agent = build_agent(build_chat_client(settings.model), sandbox)
    dev = DevServer(host=settings.host, port=settings.port, mode=settings.mode,
                    auth_enabled=bool(settings.auth_token), auth_token=settings.auth_token or None)
    dev.set_pending_entities([agent])
    app = BodyLimit(ResponsesGate(dev.get_app(), dev))
    if manager is not None:
        from .http.aca import Mounted, build_aca_app

        app = Mounted(app, build_aca_app(manager, settings), "/sessions")
    return app


async def serve(settings: Settings, open_browser: bool = False) -> None:
    """Run until SIGINT/SIGTERM; in-flight requests get one second to finish."""
    check_auth(settings)
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, settings.max_concurrency,
                             settings.queue_timeout_seconds, settings.queue_length)
    await sandbox.start()  # warm before the first request
    from .sessions import SessionManager

    manager = SessionManager(sandbox, settings)
    await manager.start()
    entra = settings.entra
    log.info("sessions API on /sessions (Microsoft Entra ID tokens: %s)",
             f"tenant {entra.tenant_id}, audience {', '.join(entra.audiences)}" if entra else "off")
    log.info("model: %s", settings.model.describe())
    log.info("sandbox: %s (%s), limits %s", settings.sandbox, settings.language, settings.limits)
    log.info("DevUI on http://%s:%d (mode %s, auth %s)", settings.host, settings.port, settings.mode,
             "on" if settings.auth_token else "off: loopback only")
    config = uvicorn.Config(build_app(settings, sandbox, manager), host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(), timeout_graceful_shutdown=1,
                            server_header=False)
    server = uvicorn.Server(config)
    if open_browser:
        asyncio.get_running_loop().call_later(1.0, _open_browser, settings)
    try:
        await server.serve()
    finally:
        await manager.close_all()
        await sandbox.close()


def _open_browser(settings: Settings) -> None:
    import webbrowser

    webbrowser.open(f"http://{'127.0.0.1' if settings.host == '0.0.0.0' else settings.host}:{settings.port}")
