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
    # The sessions API (/sessions): Microsoft Entra ID callers (None: only the DevUI token).
    entra: EntraSettings | None = None

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
    sessions = SessionLimits(
        idle_seconds=number("session_idle_seconds", 1200.0, float, low=0.1, high=7 * 24 * 3600),
        max_sessions=number("max_sessions", default_max_sessions(session_memory_mb), high=100000),
        disk_mb=number("session_disk_mb", 512, low=1, high=1024 * 1024),
        memory_mb=session_memory_mb,
        max_upload_mb=number("max_upload_mb", 128, low=1, high=1024 * 1024),
    )
    return Settings(
        host=host,
        port=number("port", 8090, high=65535),
        mode=mode,
        auth_token=env.get("DEVUI_AUTH_TOKEN", ""),
        sandbox=sandbox,
        language=language,
        limits=limits,
        max_concurrency=number("max_concurrency", 4, high=256),
        queue_timeout_seconds=number("queue_timeout", 30.0, float, low=0, high=3600),
        queue_length=number("queue_length", 64, low=0, high=100000),
        log_level=str(log_level).upper(),
        model=load_model(env),
        sessions=sessions,
        entra=load_entra(env),
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
