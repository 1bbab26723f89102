"""Let DevUI show the images in our replies.

DevUI's page renders an `output_image` item (`response.output_item.added`) as an `<img>` in the assistant's
message, but its mapper (agent-framework-devui 1.0.0b261022) cannot produce one from an image `data` content:
it reads `content.mime_type` (the attribute is `media_type`, so every image looks like octet-stream) and builds
a pydantic event whose item type the OpenAI event model rejects, so the reply gets an `error` event instead.
`install()` maps image data contents to that event as a plain dict (DevUI streams dict events as they are) and
leaves every other content to DevUI's own mapper. `DevUI` is DevServer with it installed on its mapper, and
`ShowsImages` marks the requests served by DevUI's app so the reply carries the images (`artifacts.inline_images`)
and hands what a reply shows to DevUI's store, which lists it again with the conversation (`http/devui_store.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from agent_framework import Content
from agent_framework_devui import DevServer
from starlette.types import ASGIApp, Receive, Scope, Send

from .artifacts import inline_images, keep_shown
from .conversation import conversation_key

_MARK = "_lci_output_images"


def image_event(content: Any, output_index: int, sequence_number: int) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": output_index, "sequence_number": sequence_number,
            "item": {"id": f"img_{uuid.uuid4().hex[:16]}", "type": "output_image", "image_url": content.uri,
                     "mime_type": content.media_type, "alt_text": content.name or "image produced by the code"}}


def install(mapper: Any) -> None:
    """Map image `data` contents of `mapper` (a DevUI MessageMapper) to `output_image` items; idempotent."""
    if getattr(mapper, _MARK, False):
        return
    original = mapper.content_mappers["data"]

    async def map_data(content: Any, context: dict[str, Any]) -> Any:
        media_type = content.media_type or ""
        if media_type.startswith("image/") and (content.uri or "").startswith("data:"):
            return image_event(content, context.get("output_index", 0), mapper._next_sequence(context))
        return await original(content, context)

    mapper.content_mappers["data"] = map_data
    setattr(mapper, _MARK, True)


class DevUI(DevServer):
    """DevServer whose message mapper shows our images (see the module doc)."""

    async def _ensure_executor(self):  # DevServer's own hook, where it creates the executor and its mapper
        executor = await super()._ensure_executor()
        install(executor.message_mapper)
        return executor


class ShowsImages:
    """DevUI's ASGI app, with `artifacts.inline_images` set for its requests (their agent runs and streams), and what
    they show handed to DevUI's store (`store()`: its `keep_shown(conversation id, the tool call it follows, the
    contents)`), so that the page shows it again when it lists the conversation (`artifacts.keep_shown`)."""

    def __init__(self, app: ASGIApp, store: Callable[[], Any] = lambda: None):
        self.app = app
        self.store = store  # DevUI's store (made when its executor starts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = inline_images.set(True)
        kept = keep_shown.set(self._keep)
        try:
            await self.app(scope, receive, send)
        finally:
            keep_shown.reset(kept)
            inline_images.reset(token)

    def _keep(self, call_id: str, contents: list[Content]) -> None:
        key = conversation_key.get()  # the page's conversation, set around the run (`http/responses.py`)
        keep = getattr(self.store(), "keep_shown", None) if key is not None else None
        if keep is not None:
            keep(key[1], call_id, contents)
