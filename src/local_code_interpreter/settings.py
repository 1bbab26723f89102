"""Every setting, read once from command-line flags and the environment, validated with clear errors."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .auth.entra import DEFAULT_AUDIENCE, DEFAULT_AUTHORITY, EntraSettings
from .sandbox import BACKENDS, LANGUAGES, Limits
from .sessions import SessionLimits, default_max_sessions


class ConfigError(ValueError):
    """A setting is wrong; the message names the variable (or flag) and what it should be."""


# flag name -> environment variable; a flag given on the command line wins over the environment.
ENV = {
    "host": "LCI_HOST",
    "port": "LCI_PORT",
    "mode": "LCI_DEVUI_MODE",
    "sandbox": "LCI_SANDBOX",
    "hyperlight": "LCI_HYPERLIGHT",
    "timeout": "LCI_TIMEOUT_SECONDS",
    "memory_mb": "LCI_MEMORY_MB",
    "max_output_bytes": "LCI_MAX_OUTPUT_BYTES",
    "scratch_mb": "LCI_SCRATCH_MB",
    "max_concurrency": "LCI_MAX_CONCURRENCY",
    "queue_timeout": "LCI_QUEUE_TIMEOUT_SECONDS",
    "queue_length": "LCI_QUEUE_LENGTH",
    "log_level": "LCI_LOG_LEVEL",
    "session_idle_seconds": "LCI_SESSION_IDLE_SECONDS",
    "max_sessions": "LCI_MAX_SESSIONS",
    "session_disk_mb": "LCI_SESSION_DISK_MB",
    "session_memory_mb": "LCI_SESSION_MEMORY_MB",
    "max_upload_mb": "LCI_MAX_UPLOAD_MB",
    "disk_budget_mb": "LCI_DISK_BUDGET_MB",
    # Serving (the HTTP layer and the lean /v1/responses path): see ServingSettings.
    "log_format": "LCI_LOG_FORMAT",
    "access_log": "LCI_ACCESS_LOG",
    "event_loop": "LCI_EVENT_LOOP",
    "max_body_bytes": "LCI_MAX_BODY_BYTES",
    "read_timeout": "LCI_READ_TIMEOUT_SECONDS",
    "write_timeout": "LCI_WRITE_TIMEOUT_SECONDS",
    "max_connections": "LCI_MAX_CONNECTIONS",
    "allowed_hosts": "LCI_ALLOWED_HOSTS",
    "ready_ttl": "LCI_READY_TTL_SECONDS",
    "conversations_max": "LCI_CONVERSATIONS_MAX",
    "conversation_max_items": "LCI_CONVERSATION_MAX_ITEMS",
    "conversation_item_max_bytes": "LCI_CONVERSATION_ITEM_MAX_BYTES",
    "conversations_max_bytes": "LCI_CONVERSATIONS_MAX_BYTES",
}


@dataclass(frozen=True)
class ModelSettings:
    """Which chat back end to use; secrets stay here and are never logged."""

    kind: str  # "azure-openai" | "openai" | "embedded"
    endpoint: str = ""
    deployment: str = ""
    api_version: str = ""
    api_key: str = field(default="", repr=False)
    model: str = ""
    max_retries: int = 4

    def describe(self) -> str:
        if self.kind == "azure-openai":
            auth = "API key (opt-in)" if self.api_key else "DefaultAzureCredential"
            return f"Azure OpenAI {self.endpoint} deployment {self.deployment!r}, auth: {auth}"
        if self.kind == "openai":
            return f"OpenAI model {self.model!r}"
        return ("embedded default (no model configured): messages with code are run as-is. Set "
                "AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME, or OPENAI_API_KEY, to use a model")


@dataclass(frozen=True)
class ServingSettings:
    """The HTTP layer: logs, limits for hostile clients, readiness, and the bounds of kept conversations."""

    log_format: str = "text"  # "text" | "json"
    access_log: bool = True
    # "uvloop" (libuv's loop: about 10 % less server CPU per new conversation here) or Python's own "asyncio"; "auto"
    # is uvloop where it is installed (Linux and macOS), else asyncio.
    event_loop: str = "auto"
    max_body_bytes: int = 1024 * 1024
    read_timeout: float = 10.0  # a whole request (headers and body) must arrive within this
    write_timeout: float = 30.0  # a client that reads none of its response for this long is cut off
    max_connections: int = 0  # 0: derived from the open-file limit
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted on a non-loopback bind; empty: any
    ready_ttl: float = 30.0
    conversations_max: int = 1000
    conversation_max_items: int = 200
    conversation_item_max_bytes: int = 1024 * 1024
    conversations_max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    mode: str = "developer"
    auth_token: str = field(default="", repr=False)
    sandbox: str = "subprocess"
    language: str = "python"
    limits: Limits = field(default_factory=Limits)
    max_concurrency: int = 4
    queue_timeout_seconds: float = 30.0  # how long a caller waits for an execution slot (then: busy, 429)
    queue_length: int = 64  # how many callers may wait for a slot at once (more: busy, 429)
    log_level: str = "INFO"
    model: ModelSettings = field(default_factory=lambda: ModelSettings("embedded"))
    sessions: SessionLimits = field(default_factory=SessionLimits)
    serving: ServingSettings = field(default_factory=ServingSettings)
    # The sessions API (/sessions): Microsoft Entra ID callers (None: only the DevUI token).
    entra: EntraSettings | None = None
    # What the sandbox's directories may hold in all, in MiB (0: not known). In a pod, the container's
    # ephemeral-storage limit (the Deployment passes it): past it the kubelet evicts the pod, every session with it.
    disk_budget_mb: int = 0

    @property
    def bodies_in_flight_bytes(self) -> int:
        return bodies_in_flight_bytes(self.serving.max_body_bytes, self.sessions.max_upload_mb)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(flags: dict, environ: dict[str, str] | None = None) -> Settings:
    """Merge flags (None = not given) over the environment, validate, and return the settings."""
    env = os.environ if environ is None else environ

    def given(key: str) -> bool:
        return flags.get(key) is not None or env.get(ENV[key], "") != ""

    def pick(key: str, default):
        value = flags.get(key)
        if value is not None:
            return value, f"--{key.replace('_', '-')}"
        if ENV[key] in env and env[ENV[key]] != "":
            return env[ENV[key]], ENV[key]
        return default, ENV[key]

    def number(key: str, default, kind=int, low=1, high=None):
        raw, source = pick(key, default)
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{source} must be a number, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            raise ConfigError(f"{source} must be between {low} and {high or 'any'}, got {raw!r}")
        return value

    host, _ = pick("host", "127.0.0.1")
    mode, source = pick("mode", "developer")
    if mode not in ("developer", "user"):
        raise ConfigError(f"{source} must be 'developer' or 'user', got {mode!r}")
    sandbox, source = pick("sandbox", "subprocess")
    if sandbox not in BACKENDS:
        raise ConfigError(f"{source} must be one of {', '.join(BACKENDS)}, got {sandbox!r}")
    language = flags.get("language") or "python"
    hyperlight, source = pick("hyperlight", None)
    if hyperlight:
        if hyperlight not in LANGUAGES:
            raise ConfigError(f"{source} must be one of {', '.join(LANGUAGES)}, got {hyperlight!r}")
        sandbox, language = "hyperlight", hyperlight
    if language not in LANGUAGES:
        raise ConfigError(f"--language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    log_level, source = pick("log_level", "INFO")
    if str(log_level).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{source} must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    limits = Limits(
        timeout_seconds=number("timeout", 10.0, float, low=0.1, high=3600),
        memory_mb=number("memory_mb", 512, low=32, high=65536),
        max_output_bytes=number("max_output_bytes", 65536, low=64, high=16 * 1024 * 1024),
        scratch_mb=number("scratch_mb", 64, low=1, high=65536),
    )
    session_memory_mb = number("session_memory_mb", limits.memory_mb, low=32, high=65536)
    max_sessions = number("max_sessions", default_max_sessions(session_memory_mb), high=100000)
    max_concurrency = number("max_concurrency", 4, high=256)
    disk_budget_mb = number("disk_budget_mb", 0, low=0, high=1024 * 1024 * 1024)
    disk_mb = number("session_disk_mb", 512, low=1, high=1024 * 1024)
    max_upload_mb = number("max_upload_mb", 128, low=1, high=1024 * 1024)
    serving = load_serving(pick, number)
    if disk_budget_mb:
        reserve = LOG_RESERVE_MB + -(-bodies_in_flight_bytes(serving.max_body_bytes, max_upload_mb) // MIB)
        disk_mb = fit_disk(disk_budget_mb, reserve, max_sessions, disk_mb, given("session_disk_mb"),
                           max_concurrency, limits.scratch_mb)
    sessions = SessionLimits(
        idle_seconds=number("session_idle_seconds", 1200.0, float, low=0.1, high=7 * 24 * 3600),
        max_sessions=max_sessions,
        disk_mb=disk_mb,
        memory_mb=session_memory_mb,
        max_upload_mb=max_upload_mb,
    )
    return Settings(
        host=host,
        port=number("port", 8090, high=65535),
        mode=mode,
        auth_token=env.get("DEVUI_AUTH_TOKEN", ""),
        sandbox=sandbox,
        language=language,
        limits=limits,
        max_concurrency=max_concurrency,
        queue_timeout_seconds=number("queue_timeout", 30.0, float, low=0, high=3600),
        queue_length=number("queue_length", 64, low=0, high=100000),
        log_level=str(log_level).upper(),
        model=load_model(env),
        sessions=sessions,
        entra=load_entra(env),
        serving=serving,
        disk_budget_mb=disk_budget_mb,
    )


MIB = 1024 * 1024
# Of a replica's disk budget, kept for its logs: they count towards a container's ephemeral storage, and the
# kubelet rotates a container's log at 10 MiB, keeping 5.
LOG_RESERVE_MB = 64
# A sessions API upload's body beyond its file (multipart boundaries and headers), and the largest JSON body there.
UPLOAD_OVERHEAD_BYTES = 4 * MIB


def bodies_in_flight_bytes(max_body_bytes: int, max_upload_mb: int) -> int:
    """Request bodies a replica receives at once, all callers together: twice the largest a route accepts (the
    guard refuses more, `http/guard.py`). They are held in memory, and uploads spooled to /tmp, until the request
    ends, so this much of the disk budget is kept for them."""
    return 2 * max(max_body_bytes, max_upload_mb * MIB + UPLOAD_OVERHEAD_BYTES)


def fit_disk(budget_mb: int, reserve: int, max_sessions: int, disk_mb: int, explicit: bool, max_concurrency: int,
             scratch_mb: int) -> int:
    """The per-session disk quota that keeps every directory at its quota within the budget: each of
    `max_sessions` sessions full, `max_concurrency` one-shot executions full, and the `reserve` (logs, request
    bodies in flight). Quotas are what one execution may use; this makes sure that all of them together cannot
    fill the volume (in a pod: get it evicted) for everyone. An explicit `disk_mb` that does not fit is an error;
    otherwise the default (512 MiB) is lowered to fit."""
    room = budget_mb - reserve - max_concurrency * scratch_mb
    fits = room // max_sessions if room > 0 else 0
    if explicit and disk_mb > fits or fits < 1:
        asked = f"LCI_SESSION_DISK_MB asks {disk_mb} MiB" if explicit else "each needs at least 1 MiB"
        raise ConfigError(
            f"LCI_DISK_BUDGET_MB is {budget_mb} MiB: after {reserve} MiB kept for logs and request bodies in flight "
            f"and {max_concurrency} one-shot executions x LCI_SCRATCH_MB {scratch_mb} MiB, {max(room, 0)} MiB remain "
            f"for {max_sessions} sessions (LCI_MAX_SESSIONS), at most {fits} MiB each, and {asked}. Lower "
            "LCI_SESSION_DISK_MB, LCI_MAX_SESSIONS, LCI_MAX_CONCURRENCY or LCI_SCRATCH_MB, or raise the budget (in a "
            "pod: the container's ephemeral-storage limit)")
    return disk_mb if explicit else min(disk_mb, fits)


def load_serving(pick, number) -> ServingSettings:
    log_format, source = pick("log_format", "text")
    if log_format not in ("text", "json"):
        raise ConfigError(f"{source} must be 'text' or 'json', got {log_format!r}")
    access, source = pick("access_log", "on")
    if str(access).lower() not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"{source} must be 'on' or 'off', got {access!r}")
    event_loop, source = pick("event_loop", "auto")
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"{source} must be 'auto', 'uvloop' or 'asyncio', got {event_loop!r}")
    hosts, _ = pick("allowed_hosts", "")
    mib = 1024 * 1024
    return ServingSettings(
        log_format=log_format,
        access_log=str(access).lower() in ("on", "true", "1"),
        event_loop=event_loop,
        max_body_bytes=number("max_body_bytes", mib, low=1024, high=1024 * mib),
        read_timeout=number("read_timeout", 10.0, float, low=0.5, high=3600),
        write_timeout=number("write_timeout", 30.0, float, low=0.5, high=3600),
        max_connections=number("max_connections", 0, low=0, high=1_000_000),
        allowed_hosts=tuple(h.strip().lower() for h in str(hosts).split(",") if h.strip()),
        ready_ttl=number("ready_ttl", 30.0, float, low=1, high=86400),
        conversations_max=number("conversations_max", 1000, low=1, high=1_000_000),
        conversation_max_items=number("conversation_max_items", 200, low=2, high=1_000_000),
        conversation_item_max_bytes=number("conversation_item_max_bytes", mib, low=1024, high=1024 * mib),
        conversations_max_bytes=number("conversations_max_bytes", 256 * mib, low=mib, high=1024 * 1024 * mib),
    )


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _listed(env, name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def load_entra(env) -> EntraSettings | None:
    """Microsoft Entra ID tokens for the sessions API: on when LCI_ENTRA_TENANT_ID is set."""
    tenant = env.get("LCI_ENTRA_TENANT_ID", "").strip()
    others = [name for name in ("LCI_ENTRA_AUDIENCE", "LCI_ENTRA_ALLOWED_OBJECT_IDS", "LCI_ENTRA_ALLOWED_ROLES",
                                "LCI_ENTRA_AUTHORITY") if env.get(name, "").strip()]
    if not tenant:
        if others:
            raise ConfigError(f"{others[0]} is set but LCI_ENTRA_TENANT_ID is not: set the tenant ID (a GUID) "
                              "whose tokens the sessions API accepts")
        return None
    if not _GUID.match(tenant):
        raise ConfigError(f"LCI_ENTRA_TENANT_ID must be a tenant ID (a GUID), got {tenant!r}")
    object_ids = _listed(env, "LCI_ENTRA_ALLOWED_OBJECT_IDS")
    wrong = [oid for oid in object_ids if oid != "*" and not _GUID.match(oid)]
    if wrong:
        raise ConfigError(f"LCI_ENTRA_ALLOWED_OBJECT_IDS must be object IDs (GUIDs) or *, got {wrong[0]!r}")
    roles = _listed(env, "LCI_ENTRA_ALLOWED_ROLES")
    if not object_ids and not roles:
        raise ConfigError("LCI_ENTRA_TENANT_ID is set but nobody is allowed: set LCI_ENTRA_ALLOWED_OBJECT_IDS "
                          "(callers' object IDs, or * for every principal of the tenant) or LCI_ENTRA_ALLOWED_ROLES")
    authority = env.get("LCI_ENTRA_AUTHORITY", "").strip() or DEFAULT_AUTHORITY
    parsed = urlparse(authority)
    if parsed.scheme != "https" or not parsed.netloc or parsed.query:
        raise ConfigError(f"LCI_ENTRA_AUTHORITY must be an https URL like {DEFAULT_AUTHORITY}, got {authority!r}")
    audiences = tuple(_listed(env, "LCI_ENTRA_AUDIENCE")) or (DEFAULT_AUDIENCE,)
    return EntraSettings(tenant_id=tenant.lower(), audiences=audiences, allowed_object_ids=frozenset(
        oid.lower() for oid in object_ids), allowed_roles=frozenset(roles), authority=authority.rstrip("/"))


def load_model(env) -> ModelSettings:
    """Azure OpenAI if its endpoint is set, else OpenAI if its key is set, else the embedded default."""
    endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip()
    deployment = env.get("AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME", "").strip()
    retries_raw = env.get("LCI_MODEL_MAX_RETRIES", "4")
    if not retries_raw.isdigit() or int(retries_raw) > 10:
        raise ConfigError(f"LCI_MODEL_MAX_RETRIES must be a whole number from 0 to 10, got {retries_raw!r}")
    retries = int(retries_raw)
    if endpoint or deployment:
        parsed = urlparse(endpoint)
        if not endpoint:
            raise ConfigError("AZURE_OPENAI_ENDPOINT is required when AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME is set")
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ConfigError(f"AZURE_OPENAI_ENDPOINT must be a URL like https://NAME.openai.azure.com/, got {endpoint!r}")
        if not deployment:
            raise ConfigError("AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME is required when AZURE_OPENAI_ENDPOINT is set")
        return ModelSettings("azure-openai", endpoint=endpoint, deployment=deployment,
                             api_version=env.get("AZURE_OPENAI_API_VERSION", ""),
                             api_key=env.get("AZURE_OPENAI_API_KEY", ""), max_retries=retries)
    if env.get("OPENAI_API_KEY"):
        return ModelSettings("openai", api_key=env["OPENAI_API_KEY"],
                             model=env.get("OPENAI_MODEL") or env.get("OPENAI_CHAT_MODEL") or "gpt-4o-mini",
                             max_retries=retries)
    return ModelSettings("embedded")
