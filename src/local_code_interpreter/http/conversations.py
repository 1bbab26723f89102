"""A conversation deleted in the DevUI ends its sandbox session: its process, variables and files go at once
instead of at the idle expiry, and before the client hears that the conversation was deleted. Wraps DevUI's app;
the session key is the deleting caller's own `(caller.id, conversation id)`, so nobody ends another caller's
session."""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import identity

log = logging.getLogger(__name__)
_DELETE = re.compile(r"^/v1/conversations/([^/]+)$")


class EndsSessions:
    def __init__(self, app: ASGIApp, sessions):
        self.app, self.sessions = app, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _DELETE.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "DELETE" else None
        if match is None:
            return await self.app(scope, receive, send)
        # DevUI's answer (a small JSON) is held until the session has ended: a client that continues the moment it
        # hears "deleted" must not reach the old session, and the session must not end under its next execution.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        try:
            await self.app(scope, receive, hold)
            start = next((m for m in held if m["type"] == "http.response.start"), None)
            if start is not None and 200 <= start["status"] < 300:
                caller = scope.get(identity.SCOPE_KEY) or identity.LOCAL
                if await self.sessions.close((caller.id, match.group(1))):
                    log.info("conversation %s deleted: its session ended", match.group(1))
        finally:
            for message in held:
                await send(message)
