"""`GET /v1/models` and `GET /v1/models/{id}`: the one model this server answers as, the way the OpenAI API lists
models, for the clients that list models before they use one (`client.models.list()`, chat front ends, IDE
assistants). Its id is the agent's name; `/v1/responses` takes any `model` (the server's own model answers), so the
list only names what to send. Another id is a 404 in the OpenAI shape."""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import json_bytes, send_error, send_json

_MODEL = re.compile(r"^/v1/models(?:/([^/]+))?$")


class ModelList:
    """Wraps DevUI's app (which has no such route)."""

    def __init__(self, app: ASGIApp, model_id: str, owned_by: str = "local-code-interpreter"):
        self.app = app
        self.model = {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": owned_by}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _MODEL.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if match is None:
            return await self.app(scope, receive, send)
        if match.group(1) is None:
            return await send_json(send, 200, json_bytes({"object": "list", "data": [self.model]}))
        if match.group(1) != self.model["id"]:
            return await send_error(send, 404, f"The model {match.group(1)!r} does not exist; this server answers as "
                                    f"{self.model['id']!r} (GET /v1/models)", "model_not_found")
        await send_json(send, 200, json_bytes(self.model))
