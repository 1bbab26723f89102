"""A file download as an ASGI response: the bytes of a session's file sent a piece at a time.

Every download route (`/files/...` for the DevUI page, `/v1/containers/.../content`, the sessions API's file content)
answers with `Download`. The server holds one piece (`PIECE`) of a download in memory, not the file: uvicorn's
`send` waits while the client's socket buffer is full, so a client that reads slowly holds at most that much, and
one that stops reading is cut off by the connection's write deadline (`connections.py`) instead of holding its
request, its descriptor and its memory for ever.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from ..sandbox.files import OpenedFile
from ..stopping import disconnected

PIECE = 256 * 1024


class Download:
    """`opened`'s bytes (`Content-Length`: its size when it was opened) with `headers`; no body for HEAD. The file
    is closed when the response ends, however it ends. If the file shrank while it was sent, the response stops
    short and the connection is closed: the client sees an incomplete body, never bytes that were not there."""

    def __init__(self, opened: OpenedFile, headers: dict[str, str]):
        self.opened = opened
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.headers.append((b"content-length", str(opened.size).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            left = 0 if scope["method"] == "HEAD" else self.opened.size
            if not left:
                await send({"type": "http.response.body", "body": b""})
            while left:
                piece = await self.opened.read(PIECE)
                if not piece or gone.done():
                    return  # shrank, or the client went away: uvicorn closes the connection
                left -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        finally:
            gone.cancel()
            self.opened.close()
