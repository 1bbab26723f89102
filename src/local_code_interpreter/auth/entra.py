"""Microsoft Entra ID access tokens, validated here: signature against the tenant's published keys, issuer,
audience, expiry and not-before, then an allow-list of object IDs or app roles.

The keys come from the tenant's OpenID configuration (`jwks_uri`), fetched on first use and cached by PyJWT's
`PyJWKClient`. A token whose `kid` is not in the cache triggers one refresh (Entra rotates keys), at most once
every `REFRESH_INTERVAL` seconds, so tokens with made-up key IDs cannot make us hammer the key endpoint.
Network calls run in a worker thread; the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import jwt
from jwt import PyJWKClient

from ..identity import Caller, Refused

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_AUDIENCE = "https://dynamicsessions.io"
LEEWAY_SECONDS = 60  # clock skew tolerated on exp/nbf/iat
REFRESH_INTERVAL = 60.0  # at most one key refresh a minute for unknown key IDs
FETCH_TIMEOUT = 10.0
ALGORITHMS = ["RS256"]  # what Entra signs access tokens with


class AuthError(Exception):
    """Why a request is refused: `status` 401 (no valid token) or 403 (valid, but not allowed)."""

    def __init__(self, status: int, message: str, error: str = "invalid_token"):
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


@dataclass(frozen=True)
class EntraSettings:
    """Which tenant's tokens are accepted, for which audience, and from whom.

    `allowed_object_ids`/`allowed_roles`: a token passes when its `oid` is listed or it carries one of the listed
    app roles; "*" in `allowed_object_ids` lets every principal of the tenant in (an explicit choice: any app
    registration in a tenant can get a token for a well-known audience).
    """

    tenant_id: str
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    allowed_object_ids: frozenset[str] = field(default_factory=frozenset)
    allowed_roles: frozenset[str] = field(default_factory=frozenset)
    authority: str = DEFAULT_AUTHORITY

    @property
    def issuers(self) -> tuple[str, ...]:
        """v2.0 tokens name the authority; v1.0 tokens (what `https://dynamicsessions.io/.default` yields from
        a resource without a preferred version) name sts.windows.net, or the authority for a custom one."""
        base = self.authority.rstrip("/")
        return (f"{base}/{self.tenant_id}/v2.0", f"https://sts.windows.net/{self.tenant_id}/",
                f"{base}/{self.tenant_id}/")

    @property
    def openid_configuration(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    def allows_everyone(self) -> bool:
        return "*" in self.allowed_object_ids


def _fetch_json(url: str, context: ssl.SSLContext | None = None) -> dict:
    request = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "local-code-interpreter"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT, context=context) as response:  # noqa: S310
        return json.load(response)


class EntraVerifier:
    """`await verifier(token)` → `Caller("entra:<tid>/<oid>", "entra", roles)`, or raises `AuthError`.

    `ssl_context`: whom to trust for the key endpoints (default: the system's CAs, or SSL_CERT_FILE)."""

    def __init__(self, settings: EntraSettings, ssl_context: ssl.SSLContext | None = None):
        self.settings = settings
        self.ssl_context = ssl_context
        self._failed_at = -1e9
        self._client: PyJWKClient | None = None
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    async def __call__(self, token: str) -> Caller:
        return await asyncio.to_thread(self.verify, token)

    def lenient(self):
        """For the shared ASGI guard's verifier list (`async (token) -> Caller | None`): None for a token this
        verifier does not accept (the guard answers 401), after logging why; `Refused` (403) for a valid token
        whose identity is outside the allow-lists; tokens that are not JWTs are not tried."""
        async def verify(token: str) -> Caller | None:
            if token.count(".") != 2:
                return None
            try:
                return await self(token)
            except AuthError as error:
                log.info("Entra ID token refused (%d): %s", error.status, error.message)
                if error.status == 403:
                    raise Refused(error.message) from None
                return None

        return verify

    # -- synchronous core (runs in a worker thread) --------------------------------------------------------
    def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthError(401, f"token algorithm {header.get('alg')!r} is not accepted (RS256 only)")
        key = self._signing_key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=list(self.settings.audiences),
                                issuer=list(self.settings.issuers), leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iss", "aud", "oid", "tid"]})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, f"the token's audience is not {' or '.join(self.settings.audiences)}") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "the token was issued by another tenant or authority") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "the token's signature does not verify against the tenant's keys") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(401, f"the token has no {error.claim!r} claim") from None
        except jwt.PyJWTError as error:
            raise AuthError(401, f"invalid token: {error}") from None
        if str(claims["tid"]).lower() != self.settings.tenant_id:
            raise AuthError(401, "the token belongs to another tenant")
        oid = str(claims["oid"]).lower()
        roles = tuple(str(role) for role in claims.get("roles") or ())
        allowed = (self.settings.allows_everyone() or oid in self.settings.allowed_object_ids
                   or any(role in self.settings.allowed_roles for role in roles))
        if not allowed:
            raise AuthError(403, f"principal {oid} is not allowed to use this service "
                                 "(not in LCI_ENTRA_ALLOWED_OBJECT_IDS and no role from LCI_ENTRA_ALLOWED_ROLES)",
                            error="insufficient_scope")
        name = str(claims.get("appid") or claims.get("azp") or claims.get("upn") or claims.get("name") or oid)
        return Caller(f"entra:{self.settings.tenant_id}/{oid}", "entra", roles, name)

    def _jwks(self) -> PyJWKClient:
        with self._lock:
            if self._client is None:
                if time.monotonic() - self._failed_at < 5.0:  # do not retry an unreachable authority per request
                    raise AuthError(401, "cannot fetch the tenant's signing keys (retrying shortly)",
                                    error="temporarily_unavailable")
                try:
                    config = _fetch_json(self.settings.openid_configuration, self.ssl_context)
                    jwks_uri = config["jwks_uri"]
                except Exception as error:  # noqa: BLE001 (network, JSON, missing key: all the same to the caller)
                    self._failed_at = time.monotonic()
                    log.warning("Entra ID OpenID configuration %s: %s", self.settings.openid_configuration, error)
                    raise AuthError(401, "cannot fetch the tenant's signing keys (OpenID configuration): "
                                         f"{type(error).__name__}", error="temporarily_unavailable") from None
                self._client = PyJWKClient(jwks_uri, cache_jwk_set=True, lifespan=24 * 3600,
                                           timeout=int(FETCH_TIMEOUT), headers={"user-agent": "local-code-interpreter"},
                                           ssl_context=self.ssl_context)
                self._last_refresh = time.monotonic()
            return self._client

    def _signing_key(self, kid: str | None):
        if not kid:
            raise AuthError(401, "the token names no signing key (kid)")
        client = self._jwks()
        try:
            found = self._match(client.get_signing_keys(), kid)
            if found is None:
                with self._lock:
                    due = time.monotonic() - self._last_refresh >= REFRESH_INTERVAL
                    if due:
                        self._last_refresh = time.monotonic()
                if due:  # keys rotated since we cached them?
                    found = self._match(client.get_signing_keys(refresh=True), kid)
        except jwt.PyJWKClientError as error:
            log.warning("Entra ID signing keys: %s", error)
            raise AuthError(401, "cannot fetch the tenant's signing keys", error="temporarily_unavailable") from None
        if found is None:
            raise AuthError(401, "the token is signed with a key the tenant does not publish")
        return found.key

    @staticmethod
    def _match(keys, kid: str):
        return next((key for key in keys if key.key_id == kid), None)
