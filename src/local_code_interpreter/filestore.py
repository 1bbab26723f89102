"""What the DevUI file features need from the session engine: a conversation's session directory, by key.

`sessions.SessionManager` provides these (`upload`, `read`, `files`); the DevUI attachment step and the download
route depend only on this protocol, so they can be tested without a sandbox.
"""

from __future__ import annotations

from typing import Protocol

from .sandbox.files import OpenedFile
from .sandbox.types import FileInfo

Key = tuple[str, str]  # (owner, conversation id): see conversation.py


class FileStore(Protocol):
    async def upload(self, key: Key, name: str, data: bytes) -> FileInfo: ...  # InvalidFileName, QuotaExceeded

    async def open_file(self, key: Key, name: str) -> OpenedFile: ...  # for a download; as `read`

    async def read(self, key: Key, name: str) -> bytes: ...  # InvalidFileName, FileNotFoundError (no such
    # file, or no live session for the key: a read never creates a session)
