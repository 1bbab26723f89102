"""GET `/files/{conversation}/{name}`: download a file of one of the caller's own conversations' sessions.

Who may read `(owner, conversation)`'s files:
- the authenticated caller whose id is `owner` (the shared auth layer stores it in `scope["lci.caller"]`), or
- whoever holds a *signed link* for that exact owner, conversation and file name, unexpired. The agent's replies
  carry such links (`LinkSigner.url`): the DevUI page keeps its bearer token in JavaScript and sends it only on
  its own fetch calls, so a plain link in a reply cannot carry it. A link grants one file, not the conversation,
  and says nothing about the bearer token.

Everything else is 401 (no credential), 403 (bad or expired link) or 404 (no such file, or a conversation of
someone else: the two are not told apart). The bytes are sent exactly as stored, always as an attachment, with
`nosniff` and a sandboxing CSP: a file the code wrote (HTML, SVG, ...) never runs as a page of this origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import mimetypes
import os
import time
from collections.abc import Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..filestore import FileStore
from ..identity import SCOPE_KEY, Caller
from ..sandbox.types import InvalidFileName, SandboxBusy
from .downloads import Download

log = logging.getLogger(__name__)

PREFIX = "/files"
LINK_LIFETIME_SECONDS = 12 * 3600
# Types a browser would run or render as a document of this origin: sent as opaque bytes instead.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
                "text/javascript", "application/javascript", "application/x-javascript", "text/xsl")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Mints and checks download links: HMAC-SHA256 over (owner, conversation, name, expiry).

    With a DevUI bearer token the key is derived from it, so every replica (and a restarted one) accepts the
    links the others minted; without one the key is random per process.
    """

    def __init__(self, secret: bytes, lifetime: float = LINK_LIFETIME_SECONDS, clock: Callable[[], float] = time.time):
        if len(secret) < 16:
            raise ValueError("the link signing secret must be at least 16 bytes")
        self._key = hashlib.sha256(b"local-code-interpreter file links\0" + secret).digest()
        self.lifetime, self.clock = lifetime, clock

    @classmethod
    def for_token(cls, auth_token: str | None) -> LinkSigner:
        # A link is then as hard to forge as the token is to guess, whatever the token's length.
        return cls(hashlib.sha256(auth_token.encode()).digest() if auth_token else os.urandom(32))

    def _mac(self, owner: str, conversation: str, name: str, expires: int) -> bytes:
        message = "\0".join((owner, conversation, name, str(expires))).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def token(self, owner: str, conversation: str, name: str) -> str:
        expires = int(self.clock() + self.lifetime)
        return f"{expires}.{_b64(owner.encode())}.{_b64(self._mac(owner, conversation, name, expires))}"

    def url(self, key: tuple[str, str], name: str) -> str:
        """The path (same origin as the page) that downloads `name` of the conversation `key`."""
        owner, conversation = key
        return f"{PREFIX}/{quote(conversation, safe='')}/{quote(name, safe='/')}?t={self.token(owner, conversation, name)}"

    def owner(self, token: str, conversation: str, name: str) -> str | None:
        """The owner a valid, unexpired token was minted for; None for anything else."""
        try:
            expires_text, owner_text, mac_text = token.split(".")
            expires, owner = int(expires_text), _unb64(owner_text).decode()
            mac = _unb64(mac_text)
        except (ValueError, UnicodeDecodeError):
            return None
        if expires < self.clock():
            return None
        return owner if hmac.compare_digest(mac, self._mac(owner, conversation, name, expires)) else None


def media_type(name: str) -> str:
    """What the download says it is: the usual type for the extension, opaque bytes for active content."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None or guessed in ACTIVE_TYPES:
        return "application/octet-stream"
    return guessed


def content_disposition(name: str) -> str:
    """`attachment` with the base name: an ASCII fallback plus the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    base = name.rsplit("/", 1)[-1]
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in base) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}"


def attachment(opened, name: str) -> Download:
    """A session file's download as every browser-facing route sends it: opaque for active content, saved rather
    than shown, in a sandbox of its own (`SECURITY_HEADERS`)."""
    return Download(opened, dict(SECURITY_HEADERS, **{"Content-Type": media_type(name),
                                                      "Content-Disposition": content_disposition(name)}))


def check_name(name: str) -> str:
    """The route's own check before the store's: relative, '/'-separated, no empty, `.` or `..` parts, no NUL."""
    if not name or "\0" in name or name.startswith("/") or "\\" in name:
        raise InvalidFileName(f"invalid file name: {name!r}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidFileName(f"invalid file name: {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > 1024:
        raise InvalidFileName("file name longer than 1024 bytes")
    return name


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code}},
                        status_code=status, headers={"Cache-Control": "no-store"})


def build_files_app(store: FileStore, signer: LinkSigner) -> Starlette:
    """The download app, mounted at `PREFIX` behind the shared guard (`http/guard.py`)."""

    async def download(request: Request) -> Response | Download:
        conversation, name = request.path_params["conversation"], request.path_params["name"]
        try:
            check_name(name)
        except InvalidFileName as error:
            return _error(400, str(error), "invalid_file_name")
        token = request.query_params.get("t")
        caller: Caller | None = request.scope.get(SCOPE_KEY)
        if token is not None:
            owner = signer.owner(token, conversation, name)
            if owner is None:
                return _error(403, "this download link is invalid or has expired: ask for the file again",
                              "invalid_link")
        elif caller is not None:
            owner = caller.id
        else:
            return _error(401, "authentication required: use the download link from the reply, or send "
                               "Authorization: Bearer <token>", "unauthorized")
        try:
            opened = await store.open_file((owner, conversation), name)
        except InvalidFileName as error:
            return _error(400, str(error), "invalid_file_name")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, KeyError):
            return _error(404, f"no file {name!r} in this conversation (its session may have expired)",
                          "file_not_found")
        except SandboxBusy as error:
            return _error(429, f"busy, retry in a moment: {error}", "busy")
        return attachment(opened, name)

    # Mounted at PREFIX by the serving router (Starlette's convention: `root_path` names the mount point).
    return Starlette(routes=[Route("/{conversation}/{name:path}", download, methods=["GET", "HEAD"])])
