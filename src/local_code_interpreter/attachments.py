"""Files a person attaches (DevUI's paperclip, or `input_file` / `input_image` in `/v1/responses`) land in the
conversation's session directory before the agent runs, where the code opens them by name.

An agent middleware, so it serves every path that runs the agent (DevUI and the lean Responses path) the same
way: DevUI turns `input_file` into a `data` content named after the file (`file_data` base64, `filename`) and
`input_image` into an unnamed `data` content (`image_url` as a data URI). Each is saved under its base name
(an image without one gets `image-<hash>.<ext>`); in the message the model sees, a non-image file is replaced
by a short note naming the saved file (a model cannot read a CSV as an `input_file`, and the bytes need not
travel with every later turn); an image stays, for a model that can see, with the note beside it.

Nothing runs when an attachment cannot be saved (bad name, over the upload cap or the disk quota, no
conversation): the reply says which file and why, and nothing is lost. A full replica (`SandboxBusy`) is not
turned into a reply: it aborts the run like a busy tool call does, and the HTTP layer answers 429.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from agent_framework import (AgentContext, AgentMiddleware, AgentResponse, AgentResponseUpdate, Content, Message,
                             ResponseStream)

from .artifacts import display_text
from .conversation import conversation_key
from .filestore import FileStore
from .replies import text_reply
from .sandbox.types import InvalidFileName, QuotaExceeded, SandboxUnavailable

log = logging.getLogger(__name__)

NOTE_PROPERTY = "lci_attachment_note"  # marks the notes this module adds (the embedded default skips them)
KEPT_TYPES = ("image/", "application/pdf")  # what a model can take as input; kept beside the note


class AttachmentError(ValueError):
    """An attachment that could not be saved; the message names it and says why."""


@dataclass
class Attachment:
    name: str
    media_type: str
    data: bytes


def is_note(content: Content) -> bool:
    return bool((content.additional_properties or {}).get(NOTE_PROPERTY))


def user_text(message: Message) -> str:
    """The message's own text, without the notes about its attachments."""
    return " ".join(c.text for c in message.contents if c.type == "text" and not is_note(c) and c.text)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:` URI; AttachmentError when it is malformed."""
    if not uri.startswith("data:") or "," not in uri:
        raise AttachmentError("the attachment is not a data URI")
    header, payload = uri[5:].split(",", 1)
    params = header.split(";")
    media_type = params[0].strip().lower() or "text/plain"
    try:
        if params[-1].strip().lower() == "base64":
            return media_type, base64.b64decode(payload, validate=True)
        return media_type, unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise AttachmentError("the attachment's base64 data is malformed") from None


def attachment_name(content: Content, media_type: str, data: bytes) -> str:
    """The name to save under: the file's base name as sent (browsers send no directories; anything before a
    '/' or '\\' is dropped), else `image-<hash>.<ext>` / `attachment-<hash>.<ext>`."""
    given = content.name or (content.additional_properties or {}).get("filename") or ""
    base = str(given).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", ".."):
        stem = "image" if media_type.startswith("image/") else "attachment"
        extension = mimetypes.guess_extension(media_type, strict=False) or ".bin"
        base = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{extension}"
    return base


def _is_attachment(content: Content) -> bool:
    properties = content.additional_properties or {}
    if properties.get("openai_content_type") in ("input_file", "input_image"):
        return content.type in ("data", "uri")
    return content.type == "data" and bool(content.name)


def inline_files(value):
    """A Responses `input` with each inline `input_file` (`file_data`, the OpenAI form: a data URL, or bare base64
    as DevUI sends it) also given as `file_url` = that data URL, the form the Responses parser turns into a `data`
    content. Anything else is returned as it is."""
    if not isinstance(value, list):
        return value
    for item in value:
        parts = item.get("content") if isinstance(item, dict) else None
        for part in parts if isinstance(parts, list) else [item]:
            if not isinstance(part, dict) or part.get("type") != "input_file" or part.get("file_url"):
                continue
            data = part.get("file_data")
            if isinstance(data, str) and data:
                if not data.startswith("data:"):
                    guessed = mimetypes.guess_type(str(part.get("filename") or ""), strict=False)[0]
                    data = f"data:{guessed or 'application/octet-stream'};base64,{data}"
                part["file_url"] = data
    return value


def extract(content: Content) -> Attachment:
    if content.type != "data" or not (content.uri or "").startswith("data:"):
        raise AttachmentError("only attachments sent inline (data URI or file_data) can be saved; "
                              f"{'a file id' if content.file_id else 'a URL'} cannot be fetched here")
    sent_type, data = decode_data_uri(content.uri)
    media_type = (content.media_type or sent_type or "application/octet-stream").lower()
    return Attachment(attachment_name(content, media_type, data), media_type, data)


def note(attachment: Attachment, saved_as: str) -> Content:
    return Content.from_text(
        f"[The user attached the file `{attachment.name}` ({len(attachment.data)} bytes, {attachment.media_type}); "
        f"it is saved in the working directory as `{saved_as}`: open it by that name.]",
        additional_properties={NOTE_PROPERTY: True})


class SaveAttachments(AgentMiddleware):
    """Save the incoming messages' attachments to the conversation's session, then run the agent."""

    def __init__(self, store: FileStore | None):
        self.store = store

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        try:
            saved = await self.save_all(context.messages)
        except AttachmentError as error:
            log.info("attachment refused: %s", error)
            text = f"{error}\n\nNothing was run. Fix the attachment (or send it again) and resend the message."
            context.result = text_reply(text, stream=context.stream)
            return
        await call_next()
        if saved:
            _tell(context, display_text("Saved in this conversation's working directory: "
                                        + ", ".join(f"`{name}`" for name in saved) + "\n\n"))

    async def save_all(self, messages: list[Message]) -> list[str]:
        """Save every attachment of the user messages, replacing it (or adding beside it) a note; the names.

        A message that has its notes was saved on the turn it arrived: a kept image comes back in the history of
        every later turn, and saving it again would overwrite what the code has made of the file since."""
        saved: list[str] = []
        for message in messages:
            if (message.role != "user" or not any(_is_attachment(c) for c in message.contents)
                    or any(map(is_note, message.contents))):
                continue
            contents: list[Content] = []
            for content in message.contents:
                if not _is_attachment(content):
                    contents.append(content)
                    continue
                try:
                    attachment = extract(content)
                except AttachmentError as error:
                    raise AttachmentError(f"Could not save the attachment `{content.name or '(unnamed)'}`: "
                                          f"{error}.") from None
                name = await self._save(attachment)
                saved.append(name)
                if attachment.media_type.startswith(KEPT_TYPES):
                    contents.append(content)
                contents.append(note(attachment, name))
            message.contents = contents
        return saved

    async def _save(self, attachment: Attachment) -> str:
        key = conversation_key.get()
        if self.store is None:
            raise AttachmentError(f"Could not save the attachment `{attachment.name}`: this server keeps no "
                                  "sessions, so attached files have nowhere to go.")
        if key is None:
            raise AttachmentError(
                f"Could not save the attachment `{attachment.name}`: files can only be attached within a "
                "conversation (DevUI does this for you; with /v1/responses send `conversation` or "
                "`previous_response_id`).")
        try:
            info = await self.store.upload(key, attachment.name, attachment.data)
        except InvalidFileName as error:
            raise AttachmentError(f"Could not save the attachment `{attachment.name}`: {error}. "
                                  "Rename the file and attach it again.") from None
        except QuotaExceeded as error:
            raise AttachmentError(f"Could not save the attachment `{attachment.name}` "
                                  f"({len(attachment.data)} bytes): {error}.") from None
        except SandboxUnavailable as error:
            raise AttachmentError(f"Could not save the attachment `{attachment.name}`: this sandbox keeps no "
                                  f"session directory ({error}).") from None
        log.debug("saved attachment %r (%d bytes) for conversation %s", info.name, info.size, key[1])
        return info.name


def _tell(context: AgentContext, shown: Content) -> None:
    """Open the reply with `shown` (display only: not part of what the agent said)."""
    result = context.result
    if isinstance(result, ResponseStream):
        first = True

        def prepend(update: AgentResponseUpdate) -> list[AgentResponseUpdate]:
            nonlocal first
            if not first:
                return [update]
            first = False
            return [AgentResponseUpdate(role="assistant", contents=[shown]), update]

        context.result = result.flat_map(prepend, AgentResponse.from_updates)
    elif isinstance(result, AgentResponse):
        result.messages.insert(0, Message(role="assistant", contents=[shown]))

