"""Who is calling: set by the HTTP authentication layer on each request, read by whatever scopes data per caller
(sessions are keyed by caller and identifier, so two callers never share one)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    """`id` is stable per principal: "token" for the shared bearer token, "local" for an unauthenticated loopback
    caller, "entra:<tenant>/<oid>" for a Microsoft Entra ID token."""

    id: str
    kind: str  # "local" | "token" | "entra"
    roles: tuple[str, ...] = field(default=())
    name: str = ""


LOCAL = Caller("local", "local")
TOKEN = Caller("token", "token")

# The ASGI scope key under which the authentication layer stores the request's Caller.
SCOPE_KEY = "lci.caller"


class Refused(Exception):
    """Raised by a verifier for a valid credential whose identity may not call this server: 403 (the guard tries
    no other verifier)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status, self.message = status, message
