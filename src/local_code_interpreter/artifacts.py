"""What an execution produced, shown to the person in the agent's reply: its images inline, its files as links.

The `execute_code` tool hands each `ExecutionResult` to `collect()`; the `ShowArtifacts` agent middleware (which
opens a collector for each agent run) adds, right after that tool result in the reply stream, an assistant
update holding the images as `data` contents when the consumer renders them (`inline_images`: DevUI shows them
as `output_image`, an `<img>` in the reply) and one markdown line per produced file linking to the download
route (`http/files.py`) with a signed link.

These updates are for display only: the conversation's history (what a model reads on the next turn) holds the
tool's text result, which says what was shown, not the image bytes (an assistant message carrying images is not
valid model input) nor the links with their signed grants. They are added outside the agent's own run, so an
`AgentSession`'s history (DevUI's) never sees them; a caller that records a turn itself (the lean path) keeps what
`said()` keeps.

A consumer that shows a conversation again later (DevUI's page, reloaded) sets `keep_shown`: it is handed each
display with the id of the tool call it follows, and keeps it beside the history (`http/devui_store.py`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from agent_framework import (AgentContext, AgentMiddleware, AgentResponse, AgentResponseUpdate, Content, Message,
                             ResponseStream)

from .conversation import conversation_key
from .sandbox.types import ExecutionResult, FileInfo, Image

log = logging.getLogger(__name__)

DISPLAY_PROPERTY = "lci_display_only"
MAX_IMAGES_PER_RESULT = 8
MAX_LINKED_FILES = 20


class Linker:
    """Turns (conversation key, file name) into a URL the page can follow; see `http.files.LinkSigner`."""

    def url(self, key: tuple[str, str], name: str) -> str: ...


@dataclass
class Produced:
    """One execution's images and files, with the conversation its files belong to (None: one-shot)."""

    key: tuple[str, str] | None
    images: list[Image] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)


_collector: ContextVar[list[Produced] | None] = ContextVar("lci_artifacts", default=None)
# Whether this run's consumer renders image `data` contents in the reply: DevUI's page does (the request path
# to it sets this, see devui_output.py); the Responses output has no standalone image, so API clients get the
# images in the tool result (`function_call_output`) and the links as text.
inline_images: ContextVar[bool] = ContextVar("lci_inline_images", default=False)
# Who keeps what the person was shown, to show it again with the conversation: called with the id of the tool
# call a display follows and its contents. Unset: nobody keeps it (the lean path: its clients read the tool result).
keep_shown: ContextVar[Callable[[str, list[Content]], None] | None] = ContextVar("lci_keep_shown", default=None)


def collect(result: ExecutionResult) -> None:
    """Called by the tool with each result; does nothing outside an agent run that shows artifacts."""
    pending = _collector.get()
    if pending is not None and (result.images or result.files):
        pending.append(Produced(conversation_key.get(), list(result.images), list(result.files)))


def _size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _code_span(name: str) -> str:
    """The name as a markdown code span, so DevUI shows it literally (its markdown has no escapes)."""
    return "`" + name.replace("`", "'") + "`"


def display_contents(produced: Sequence[Produced], linker: Linker | None, images: bool = True) -> list[Content]:
    """The contents shown for these executions: images first (when `images`), then one link line per file."""
    contents: list[Content] = []
    lines: list[str] = []
    props = {DISPLAY_PROPERTY: True}
    for item in produced:
        for image in item.images[:MAX_IMAGES_PER_RESULT] if images else ():
            contents.append(Content.from_data(image.data, image.media_type, additional_properties=dict(props)))
        if item.key is None or linker is None:
            continue
        for info in item.files[:MAX_LINKED_FILES]:
            lines.append(f"- {_code_span(info.name)}: [download]({linker.url(item.key, info.name)}) ({_size(info.size)})")
    if lines:
        contents.append(Content.from_text("\n\nFiles:\n" + "\n".join(lines) + "\n\n",
                                          additional_properties=dict(props)))
    return contents


def display_text(text: str) -> Content:
    """Text shown to the person in this reply only (not kept as what the agent said)."""
    return Content.from_text(text, additional_properties={DISPLAY_PROPERTY: True})


def _shown_only(content: Content) -> bool:
    return bool((content.additional_properties or {}).get(DISPLAY_PROPERTY))


def said(messages: Sequence[Message]) -> list[Message]:
    """The messages as the agent said them, for the history a later turn sends the model: without the display-only
    contents, and without a message left empty. The given messages are not changed: the reply still shows everything.

    A caller of `Agent.run` needs it: a streamed run's final response is built from every update the caller was
    given (SafeReplies' `replies._cleaned` re-wraps the stream, so an inner finalizer would not count), the
    display-only ones merged into the messages around them; a non-streamed run holds them as messages of their own
    (`ShowArtifacts._insert`)."""
    kept: list[Message] = []
    for message in messages:
        if not any(_shown_only(c) for c in message.contents):
            kept.append(message)
            continue
        contents = [c for c in message.contents if not _shown_only(c)]
        if contents:
            trimmed = copy.copy(message)
            trimmed.contents = contents
            kept.append(trimmed)
    return kept


class ShowArtifacts(AgentMiddleware):
    """Open a collector for the run; after each tool result, show what that execution produced."""

    def __init__(self, linker: Linker | None):
        self.linker = linker

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        pending: list[Produced] = []
        if not context.stream:
            token = _collector.set(pending)
            try:
                await call_next()
            finally:
                _collector.reset(token)
            if pending and isinstance(context.result, AgentResponse):
                self._insert(context.result, pending)
            return

        @contextlib.contextmanager
        def collecting() -> Iterator[None]:
            # Around each pull of the stream: the tool runs inside a pull, in the consumer's context.
            token = _collector.set(pending)
            try:
                yield
            finally:
                _collector.reset(token)

        await call_next()
        if not isinstance(context.result, ResponseStream):
            return

        def expand(update: AgentResponseUpdate) -> list[AgentResponseUpdate]:
            if not pending or not any(c.type == "function_result" for c in update.contents):
                return [update]
            shown = display_contents(pending, self.linker, inline_images.get())
            pending.clear()
            if not shown:
                return [update]
            _keep(update.contents, shown)
            return [update, AgentResponseUpdate(role="assistant", contents=shown)]

        context.result = context.result.with_pull_context_manager(collecting).flat_map(
            expand, AgentResponse.from_updates)

    def _insert(self, response: AgentResponse, pending: list[Produced]) -> None:
        """Non-streaming: the display message goes right after the last tool result."""
        shown = display_contents(pending, self.linker, inline_images.get())
        if not shown:
            return
        at, follows = len(response.messages), None
        for index, message in enumerate(response.messages):
            if any(c.type == "function_result" for c in message.contents):
                at, follows = index + 1, message
        if follows is not None:
            _keep(follows.contents, shown)
        response.messages.insert(at, Message(role="assistant", contents=shown))


def _keep(contents: Sequence[Content], shown: list[Content]) -> None:
    """Hand `shown` to whoever keeps displays (`keep_shown`), by the last tool call among `contents` it follows."""
    keeper = keep_shown.get()
    calls = [c.call_id for c in contents if c.type == "function_result" and c.call_id]
    if keeper is not None and calls:
        keeper(calls[-1], shown)
