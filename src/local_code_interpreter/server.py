"""Serving: composes the shared HTTP layer (`http/guard.py`) with the routes behind it — `/health` and `/ready`
(`http/health.py`), the lean `/v1/responses` for API clients (`http/responses.py`), apps mounted under a prefix
(e.g. the sessions API at `/sessions`), and DevUI (its web page and API) for everything else — and runs uvicorn
with the connection guards (`http/connections.py`), the process's own telemetry (`telemetry.py`) and logs
(`logs.py`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from . import logs, telemetry
from .agent import AGENT_NAME, build_agent
from .artifacts import ShowArtifacts
from .attachments import SaveAttachments
from .auth.entra import EntraVerifier
from .devui_output import DevUI, ShowsImages
from .http import devui_store
from .http.aca import MAX_JSON_BYTES, MULTIPART_SLACK, build_aca_app, send_aca_error
from .http.connections import accept_backlog, default_max_connections, protocol
from .http.containers import PREFIX as CONTAINERS_PREFIX
from .http.containers import build_containers_app
from .http.conversation_items import ConversationItems
from .http.conversations import DeletesConversations
from .http.devui_api import DevUIApi
from .http.files import PREFIX as FILES_PREFIX
from .http.files import LinkSigner, build_files_app
from .http.guard import LOOPBACK_NAMES, Guard, Verifier, token_verifier
from .http.health import HealthApp, Readiness
from .http.history import Bounds, ConversationStore
from .http.model_list import ModelList
from .http.responses import ResponsesApp
from .http.stored import StoredResponses
from .models import build_chat_client
from .sandbox import create_sandbox, sandbox_descriptors
from .sessions import SessionManager
from .settings import ConfigError, Settings

log = logging.getLogger(__name__)
ACA_PREFIX = "/sessions"  # the Azure Container Apps code interpreter sessions API (pool management endpoint)
Mount = tuple[str, ASGIApp]  # (prefix such as "/sessions", ASGI app)


def check_auth(settings: Settings, verifiers: Sequence[Verifier] = ()) -> None:
    """A non-loopback bind without a token would expose code execution to the network: refuse to start."""
    if not settings.loopback and not settings.auth_token and not verifiers and settings.entra is None:
        raise ConfigError(f"DEVUI_AUTH_TOKEN is required to listen on {settings.host} (not loopback): "
                          "set it to a long random secret, or bind to 127.0.0.1")


class Router:
    """Path dispatch behind the guard: probes, the lean Responses path, mounts, then DevUI."""

    def __init__(self, devui: ASGIApp, responses: ASGIApp, health: ASGIApp, mounts: Sequence[Mount] = ()):
        self.devui, self.responses, self.health = devui, responses, health
        self.mounts = [(prefix.rstrip("/"), app) for prefix, app in mounts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path in ("/health", "/ready"):
                return await self.health(scope, receive, send)
            if path == "/v1/responses" and scope["method"] == "POST":
                return await self.responses(scope, receive, send)
            for prefix, app in self.mounts:
                if path == prefix or path.startswith(prefix + "/"):
                    # Starlette's convention: `path` stays whole, `root_path` names the mount point.
                    return await app(dict(scope, root_path=scope.get("root_path", "") + prefix), receive, send)
        await self.devui(scope, receive, send)


def build_app(settings: Settings, sandbox, mounts: Sequence[Mount] = (), verifiers: Sequence[Verifier] = (),
              readiness: Readiness | None = None, sessions: SessionManager | None = None) -> ASGIApp:
    """The whole application: guard → router → (health | lean responses | mounts | DevUI).

    With `sessions`, each conversation keeps a sandbox session: attached files land in it (`attachments.py`),
    the replies show its images and link its files (`artifacts.py`), served by `GET /files/...` (`http/files.py`)
    and, to API clients, by the OpenAI Containers API's file routes (`http/containers.py`).
    """
    telemetry.setup()
    telemetry.route_devui_traces()
    serving = settings.serving
    bounds = Bounds(max_items=serving.conversation_max_items, item_max_bytes=serving.conversation_item_max_bytes,
                    max_bytes=serving.conversations_max_bytes, max_conversations=serving.conversations_max)
    # The page's conversations (DevUI's store) are bounded as the lean path's are, their bytes in the same total.
    devui_store.install(bounds, others=lambda: store.total_bytes)
    links = LinkSigner.for_token(settings.auth_token)
    agent = build_agent(build_chat_client(settings.model), sandbox, sessions,
                        middleware=[SaveAttachments(sessions), ShowArtifacts(links if sessions is not None else None)])
    if sessions is not None:
        mounts = [*mounts, (FILES_PREFIX, build_files_app(sessions, links)),
                  (CONTAINERS_PREFIX, build_containers_app(sessions)),  # the OpenAI Containers API's files
                  (ACA_PREFIX, build_aca_app(sessions, settings))]  # the Azure Container Apps sessions API
    # DevUI refuses to run unauthenticated off loopback. With only other verifiers (Entra ID) configured, its own
    # API gets an unguessable token nobody holds: the DevUI page is for DEVUI_AUTH_TOKEN holders.
    devui_token = settings.auth_token or (None if settings.loopback else secrets.token_urlsafe(32))
    dev = DevUI(host=settings.host, port=settings.port, mode=settings.mode,
                auth_enabled=bool(devui_token), auth_token=devui_token)
    dev.set_pending_entities([agent])

    def devui_conversations() -> Any:
        """DevUI's conversation store (`http/devui_store.py`), once its executor made it."""
        return getattr(dev.executor, "conversation_store", None)

    store = ConversationStore(bounds, others=lambda: getattr(devui_conversations(), "bytes", 0))

    def devui_entity_id() -> str | None:
        entities = dev.executor.entity_discovery.list_entities() if dev.executor is not None else []
        return entities[0].id if len(entities) == 1 else None

    def devui_input_error(value: Any, conversation: str | None) -> str | None:
        """What DevUI finds wrong reading a `/v1/responses` input, by DevUI's own reading (side-effect free)."""
        read = getattr(dev.executor, "_convert_input_to_chat_message", None)
        try:
            if read is not None:
                read(value, conversation)
        except Exception as error:  # noqa: BLE001 - InputConversionError, or what else DevUI would fail on the same
            return str(error) or type(error).__name__
        return None

    def devui_holds(conversation: str) -> bool:
        """Whether DevUI holds this conversation, as its run decides it (`get_session`: else it runs without one)."""
        held = devui_conversations()
        return held is None or held.get_session(conversation) is not None

    readiness = readiness or Readiness(sandbox, ok_ttl=serving.ready_ttl, timeout=settings.limits.timeout_seconds + 20)
    devui_app = DevUIApi(dev.get_app(), devui_entity_id,  # its errors in the OpenAI shape; unknown entities 404
                         devui_input_error, devui_holds)
    devui_app = devui_store.BoundsRuns(devui_app, devui_conversations)  # the page's conversations stay bounded
    devui_app = ShowsImages(devui_app, devui_conversations)  # its page renders a reply's images, again after a reload
    devui_app = StoredResponses(devui_app, store)  # what the lean path keeps, read back (GET /v1/responses/{id}...)
    devui_app = ConversationItems(devui_app, store)  # items an API client puts into a conversation: the lean path's
    devui_app = DeletesConversations(devui_app, sessions, store.forget)  # a deleted conversation: history and session
    devui_app = ModelList(devui_app, AGENT_NAME)  # GET /v1/models: the one model the server answers as
    router = Router(devui_app, ResponsesApp(agent, store, devui_app, AGENT_NAME, devui_entity_id,
                                            end_session=sessions.close if sessions is not None else None),
                    HealthApp(readiness), mounts)
    return guard(settings, router, sessions=sessions is not None, verifiers=verifiers)


def guard(settings: Settings, router: ASGIApp, *, sessions: bool, verifiers: Sequence[Verifier] = (),
          entra: Verifier | None = None) -> Guard:
    """The shared layer in front of `router`, configured from the settings: the DevUI token (and `verifiers`) on
    every path; with `sessions`, the sessions API's own body caps and error shape under `/sessions`, Microsoft
    Entra ID tokens accepted there only (`entra`, default: a verifier for `settings.entra` when it is set), and
    the download route's signed links."""
    serving = settings.serving
    scoped: dict[str, list[Verifier]] = {}
    body_limits: dict[str, int] = {}
    error_senders = {}
    if sessions:
        prefix = ACA_PREFIX + "/"
        body_limits[prefix] = max(MAX_JSON_BYTES, settings.sessions.max_upload_mb * 1024 * 1024 + MULTIPART_SLACK)
        error_senders[prefix] = send_aca_error
        body_limits[CONTAINERS_PREFIX + "/"] = settings.sessions.max_upload_mb * 1024 * 1024 + MULTIPART_SLACK
        if entra is None and settings.entra is not None:
            entra = EntraVerifier(settings.entra).lenient()
        if entra is not None:
            scoped[prefix] = [entra]
    all_verifiers = ([token_verifier(settings.auth_token)] if settings.auth_token else []) + list(verifiers)
    if settings.loopback:
        allowed = LOOPBACK_NAMES
    else:
        allowed = frozenset(serving.allowed_hosts) if serving.allowed_hosts else None
    return Guard(router, verifiers=all_verifiers, allow_local=settings.loopback and not settings.auth_token,
                 allowed_hosts=allowed, max_body_bytes=serving.max_body_bytes, access_log=serving.access_log,
                 # Download links in replies carry their own signed grant (a link cannot carry the bearer token).
                 self_authenticating=(FILES_PREFIX + "/",) if sessions else (),
                 body_limits=body_limits, scoped_verifiers=scoped, error_senders=error_senders,
                 bodies_in_flight=settings.bodies_in_flight_bytes)


async def serve(settings: Settings, open_browser: bool = False, mounts: Sequence[Mount] = (),
                verifiers: Sequence[Verifier] = ()) -> None:
    """Run until SIGINT/SIGTERM; in-flight requests get one second to finish.

    `mounts`: extra ASGI apps behind the same guard, e.g. `[("/sessions", build_aca_app(manager, settings))]`;
    `verifiers`: extra bearer-token verifiers (`async (token) -> Caller | None`), e.g. Microsoft Entra ID.
    """
    check_auth(settings, verifiers)  # Microsoft Entra ID settings count as a guard too (on /sessions)
    logs.configure(settings.log_level, settings.serving.log_format)
    sandbox = create_sandbox(settings.sandbox, settings.limits, settings.language, settings.max_concurrency,
                             settings.queue_timeout_seconds, settings.queue_length)
    await sandbox.start()  # warm before the first request
    serving = settings.serving
    # Every live session (and spare child) holds descriptors in this process too: the connection cap leaves
    # room for all of them, or a replica full of sessions would run out of descriptors under idle connections.
    held = sandbox_descriptors(settings.sandbox, settings.sessions.max_sessions, settings.max_concurrency)
    room = default_max_connections(held)
    if room < 64:
        log.warning("the open-file limit leaves room for only %d connections beside %d sessions (%d descriptors): "
                    "raise the limit (ulimit -n) or lower LCI_MAX_SESSIONS", room, settings.sessions.max_sessions,
                    held)
    max_connections = serving.max_connections or room
    if max_connections > room:
        log.warning("LCI_MAX_CONNECTIONS=%d is above what the open-file limit leaves room for (with %d sessions); "
                    "using %d", max_connections, settings.sessions.max_sessions, room)
        max_connections = room
    log.info("model: %s", settings.model.describe())
    log.info("sandbox: %s (%s), limits %s", settings.sandbox, settings.language, settings.limits)
    entra = settings.entra
    log.info("sessions API on /sessions (Microsoft Entra ID tokens: %s)",
             f"tenant {entra.tenant_id}, audience {', '.join(entra.audiences)}" if entra else "off")
    log.info("DevUI on http://%s:%d (mode %s, auth %s); at most %d connections, %g s to send a request, %g s to read "
             "none of a response; event loop %s", settings.host, settings.port, settings.mode,
             "on" if settings.auth_token else "off: loopback only", max_connections, serving.read_timeout,
             serving.write_timeout, loop_name(asyncio.get_running_loop()))
    readiness = Readiness(sandbox, ok_ttl=serving.ready_ttl, timeout=settings.limits.timeout_seconds + 20)
    sessions = SessionManager(sandbox, settings)
    await sessions.start()
    app = build_app(settings, sandbox, mounts, verifiers, readiness, sessions)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            log_config=logs.uvicorn_log_config(), access_log=False,
                            timeout_graceful_shutdown=1, server_header=False,
                            http=protocol(serving.read_timeout, max_connections, serving.write_timeout), ws="none",
                            timeout_keep_alive=max(5, int(serving.read_timeout)), backlog=accept_backlog())
    server = uvicorn.Server(config)
    if open_browser:
        asyncio.get_running_loop().call_later(1.0, _open_browser, settings)
    first_check = asyncio.create_task(readiness.current())  # the first /ready answer is ready sooner
    settle_collector()
    try:
        await server.serve()
    finally:
        first_check.cancel()
        readiness.stop()
        await sessions.close_all()
        await sandbox.close()


# The youngest generation is collected every 10,000 net allocations of container objects, not CPython's 700. A
# request allocates about 4,000: at 700 a collection caught most requests mid-flight, so their live objects were
# walked, promoted, and counted towards the next full collection, which walks every kept conversation (66,000 objects
# after 2,000 short turns). Measured with a `gc.callbacks` timer in the server, 4,000 short turns, twice each way:
# the collector's CPU per turn fell from 0.133 to 0.070 ms (full collections' share from 0.083 to 0.019 ms).
COLLECTOR_THRESHOLDS = (10_000, 10, 10)


def settle_collector() -> None:
    """Once start-up is done: what it built lives as long as the process, and no later collection walks it
    (`gc.freeze`); and the thresholds above."""
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def run(settings: Settings, open_browser: bool = False) -> None:
    """Serve until stopped, on the event loop LCI_EVENT_LOOP names (`runner`)."""
    runner(settings.serving.event_loop)(serve(settings, open_browser=open_browser))


def runner(choice: str) -> Callable[[Coroutine], object]:
    """How to run the service on the event loop `choice` names: "uvloop" (libuv's, its transports and timers in
    C: about 10 % less server CPU per new conversation than asyncio here, per turn about the same: `bench_ab.py
    HEAD --old-env LCI_EVENT_LOOP=asyncio`), "asyncio" (Python's own), or "auto": uvloop where it is installed
    (Linux and macOS), else asyncio."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("LCI_EVENT_LOOP is 'uvloop' but uvloop is not installed here (it runs on Linux "
                                  "and macOS): install it, or set LCI_EVENT_LOOP=asyncio") from None
        else:
            return uvloop.run
    return asyncio.run


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _open_browser(settings: Settings) -> None:
    import webbrowser

    webbrowser.open(f"http://{'127.0.0.1' if settings.host == '0.0.0.0' else settings.host}:{settings.port}")
