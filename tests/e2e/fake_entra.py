"""A stand-in for the Microsoft Entra token endpoint, as a workload identity's client-credentials flow calls it.

With a `Signer`, it also plays the tenant's published keys: issued tokens are RS256 JWTs (v2.0 claims: iss, aud,
tid, oid, appid, roles, exp, nbf, iat), and it serves the OpenID configuration and the JWKS a resource server
validates them against. Without one, tokens are opaque strings (what the Azure OpenAI stand-in compares).
"""
from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass
class Signer:
    """The tenant's signing key (published in the JWKS) and what goes into the tokens it signs. `forge` set to
    another key makes the stand-in sign with that one under the same key ID: a token the tenant never issued."""

    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: tuple[str, ...] = ()
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048), repr=False)
    forge: rsa.RSAPrivateKey | None = field(default=None, repr=False)

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [dict(jwk, kid=self.kid, use="sig", kty="RSA")]}

    def token(self, issuer: str, tenant_id: str, client_id: str, scope: str, lifetime: int) -> str:
        now = int(time.time())
        claims = {"aud": scope.removesuffix("/.default"), "iss": issuer, "iat": now, "nbf": now,
                  "exp": now + lifetime, "tid": tenant_id, "oid": self.object_id, "sub": self.object_id,
                  "appid": client_id, "azp": client_id, "ver": "2.0"}
        if self.roles:
            claims["roles"] = list(self.roles)
        return jwt.encode(claims, self.forge or self.key, algorithm="RS256", headers={"kid": self.kid})


@dataclass
class Entra:
    """What the stand-in accepts (tenant, client ID, assertions the 'cluster' issued) and what it saw."""

    tenant_id: str
    client_id: str
    expires_in: int = 3600
    scope: str = SCOPE
    signer: Signer | None = None
    assertions: set[str] = field(default_factory=set)  # every token file content written so far
    issued: list[str] = field(default_factory=list)  # access tokens, newest last
    seen: list[dict] = field(default_factory=list)  # each token request's form fields
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, path: str, form: dict[str, str]) -> str:
        """Why this request is refused, or '' when it is a valid client-credentials request."""
        if path != f"/{self.tenant_id}/oauth2/v2.0/token":
            return f"unexpected path {path}"
        expected = {"client_id": self.client_id, "grant_type": "client_credentials",
                    "client_assertion_type": JWT_BEARER, "scope": self.scope}
        wrong = [k for k, v in expected.items() if form.get(k) != v]
        if wrong:
            return f"wrong {', '.join(wrong)}: {({k: form.get(k) for k in wrong})}"
        if form.get("client_assertion") not in self.assertions:
            return "client_assertion is not a token the cluster issued"
        return ""


class EntraHandler(BaseHTTPRequestHandler):
    """POST /{tenant}/oauth2/v2.0/token; anything else is refused and recorded."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        entra: Entra = self.server.state
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        with entra.lock:
            entra.seen.append(form)
            problem = entra.check(self.path.split("?")[0], form)
            if problem:
                entra.refused.append(problem)
                return self._json(400, {"error": "invalid_client", "error_description": f"AADSTS700016: {problem}"})
            if entra.signer is None:
                token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(24) + ".fake"
            else:
                token = entra.signer.token(f"{self.server.url}/{entra.tenant_id}/v2.0", entra.tenant_id,
                                           entra.client_id, entra.scope, entra.expires_in)
            entra.issued.append(token)
        self._json(200, {"token_type": "Bearer", "expires_in": entra.expires_in,
                         "ext_expires_in": entra.expires_in, "access_token": token})

    def do_GET(self) -> None:
        entra: Entra = self.server.state
        base, tenant, path = self.server.url, entra.tenant_id, self.path.split("?")[0]
        if entra.signer is not None and path == f"/{tenant}/v2.0/.well-known/openid-configuration":
            with entra.lock:
                entra.seen.append({"GET": path})
            return self._json(200, {"issuer": f"{base}/{tenant}/v2.0",
                                    "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                                    "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                                    "id_token_signing_alg_values_supported": ["RS256"]})
        if entra.signer is not None and path == f"/{tenant}/discovery/v2.0/keys":
            with entra.lock:
                entra.seen.append({"GET": path})
            return self._json(200, entra.signer.jwks())
        entra.refused.append(f"GET {self.path}")
        self._json(404, {"error": "not_found"})

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
