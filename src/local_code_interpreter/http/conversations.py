"""`DELETE /v1/conversations/{id}` deletes the whole conversation, wherever it is kept: DevUI's record of it (its
web page's conversations), the lean `/v1/responses` path's history of it (`ConversationStore`: an API client's
`conversation` needs no creating), and its sandbox session (process, variables and files go at once instead of at
the idle expiry). All of that is done before the client hears that the conversation was deleted, so a client that
continues at once finds nothing of it. It answers 404 only when none of the three knew the conversation.

Wraps DevUI's app (with `sessions` None, as for a server that keeps none, only the history goes); the keys are the
deleting caller's own (`(caller.id, conversation id)`), so nobody deletes another caller's conversation or ends
their session."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import identity
from .errors import held_answer, json_bytes, send_json

log = logging.getLogger(__name__)
_DELETE = re.compile(r"^/v1/conversations/([^/]+)$")


class DeletesConversations:
    def __init__(self, app: ASGIApp, sessions, forget: Callable[[str, str], bool] = lambda owner, conversation: False):
        self.app, self.sessions, self.forget = app, sessions, forget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _DELETE.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "DELETE" else None
        if match is None:
            return await self.app(scope, receive, send)
        conversation = match.group(1)
        held: list[Message] = []  # DevUI's answer (a small JSON), sent once everything is gone
        ours = False  # an API client's conversation, unknown to DevUI's page: the answer is ours
        try:
            status, held = await held_answer(self.app, scope, receive)
            in_devui = 200 <= status < 300
            caller = scope.get(identity.SCOPE_KEY) or identity.LOCAL
            forgotten = self.forget(caller.id, conversation)
            ended = (self.sessions is not None  # a server without sessions keeps only the history
                     and await self.sessions.close((caller.id, conversation), interrupt=True))  # stops running code
            if ended:
                log.info("conversation %s deleted: its session ended", conversation)
            ours = not in_devui and (forgotten or ended)
        finally:
            if ours:
                await send_json(send, 200, json_bytes(
                    {"id": conversation, "object": "conversation.deleted", "deleted": True}))
            else:
                for message in held:
                    await send(message)
