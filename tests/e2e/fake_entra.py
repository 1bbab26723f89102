"""A stand-in for the Microsoft Entra token endpoint, as a workload identity's client-credentials flow calls it."""
from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass
class Entra:
    """What the stand-in accepts (tenant, client ID, assertions the 'cluster' issued) and what it saw."""

    tenant_id: str
    client_id: str
    expires_in: int = 3600
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
                    "client_assertion_type": JWT_BEARER, "scope": SCOPE}
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
            token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(24) + ".fake"
            entra.issued.append(token)
        self._json(200, {"token_type": "Bearer", "expires_in": entra.expires_in,
                         "ext_expires_in": entra.expires_in, "access_token": token})

    def do_GET(self) -> None:
        self.server.state.refused.append(f"GET {self.path}")
        self._json(404, {"error": "not_found"})

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
