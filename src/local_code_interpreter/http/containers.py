"""The OpenAI Containers API's file routes, over a conversation's sandbox session: how an API client gets the files
its code made, and gives the code files of its own, as it does with the OpenAI API's hosted code interpreter.

Each `code_interpreter_call` item names its `container_id`: the conversation the session belongs to
(`tool_items.py`; a `previous_response_id` chain's first conversation), or the container the request's
`code_interpreter` tool named (`client_tools.named_container`). Under `/v1/containers/{container_id}`:
- `GET files` (paged as OpenAI lists are: `limit`, `order`, `after`), `GET files/{file_id}`,
  `GET files/{file_id}/content` (the bytes, sent as `http/files.py` sends a download: an attachment, `nosniff`),
  `DELETE files/{file_id}`;
- `POST files` (multipart/form-data with a `file` part, as `client.containers.files.create(id, file=...)` sends
  it): the file lands in the session's directory, which is created when the conversation has none yet, so the next
  response's code finds it by name. Copying a file of the Files API (`file_id`) is not served: a 400 says so.
A file's id is `cfile_` and its name (URL-safe base64), so it is stable while the file lives; `path` is its name in
the session's working directory. `GET /v1/containers/{container_id}` says whether its session is live (404 when
not) and `DELETE` ends it at once (its process and files; code running in it is stopped). The key is (caller,
container id): another caller's container is a 404, as a missing one is. Reading never starts a session; a
container without one lists no files.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..filestore import Key
from ..identity import LOCAL, SCOPE_KEY
from ..sandbox.types import FileInfo, InvalidFileName, QuotaExceeded, SandboxBusy, SandboxUnavailable
from ..sessions import MAX_KEY_PART
from . import stored
from .downloads import Download
from .errors import error_body, json_bytes, status_for
from .files import attachment

PREFIX = "/v1/containers"
_ID = "cfile_"
CONTAINER_RULE = f"at most {MAX_KEY_PART} printable characters, no '/'"


def is_container_id(value: Any) -> bool:
    """Whether `value` can name a container: a session's identifier (`sessions.MAX_KEY_PART`) that is a path segment
    of `/v1/containers/{id}` (printable, no '/', no blanks around it)."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_KEY_PART and value.isprintable() and "/" not in value
            and value.strip() == value)


def file_id(name: str) -> str:
    return _ID + base64.urlsafe_b64encode(name.encode("utf-8", "surrogatepass")).rstrip(b"=").decode("ascii")


def file_name(identifier: str) -> str:
    """The name a file id stands for; FileNotFoundError for an id that is not one of ours."""
    if not identifier.startswith(_ID):
        raise FileNotFoundError(identifier)
    text = identifier[len(_ID):]
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        raise FileNotFoundError(identifier) from None


def entry(container: str, info: FileInfo, source: str = "assistant") -> dict:
    return {"id": file_id(info.name), "object": "container.file", "created_at": int(info.modified),
            "bytes": info.size, "container_id": container, "path": info.name, "source": source}


class _Failure(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.code = status, code


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers={"Cache-Control": "no-store"})


def build_containers_app(store) -> Starlette:
    """The routes, mounted at `PREFIX` behind the shared guard, over a `sessions.SessionManager`."""

    def key(request: Request) -> Key:
        caller, container = request.scope.get(SCOPE_KEY) or LOCAL, request.path_params["container_id"]
        if not is_container_id(container):  # no session can have it
            raise FileNotFoundError(container)
        return caller.id, container

    async def info(request: Request) -> tuple[Key, FileInfo]:
        where, name = key(request), file_name(request.path_params["file_id"])
        found = next((i for i in await store.files(where) if i.name == name), None)
        if found is None:
            raise FileNotFoundError(name)
        return where, found

    async def list_files(request: Request) -> Response:
        where = key(request)
        infos = sorted(await store.files(where), key=lambda i: (i.modified, i.name))
        items = [(file_id(i.name), json_bytes(entry(where[1], i))) for i in infos]
        try:
            return _json(stored.page(items, request.scope))
        except stored.BadQuery as error:
            raise _Failure(400, str(error), "invalid_request") from None

    async def retrieve(request: Request) -> Response:
        where, found = await info(request)
        return _json(json_bytes(entry(where[1], found)))

    async def content(request: Request) -> Download:
        where, name = key(request), file_name(request.path_params["file_id"])
        return attachment(await store.open_file(where, name), name)

    async def delete(request: Request) -> Response:
        where, name = key(request), file_name(request.path_params["file_id"])
        await store.delete(where, name)
        return _json(json_bytes({"id": file_id(name), "object": "container.file.deleted", "deleted": True}))

    async def create(request: Request) -> Response:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise _Failure(400, "send the file as multipart/form-data with a 'file' part; copying a file of the "
                                "Files API ('file_id') is not served here", "invalid_request")
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile) or not upload.filename:
                    raise _Failure(400, "the form needs a 'file' part with a file name", "invalid_request")
                name, data = upload.filename.replace("\\", "/").rsplit("/", 1)[-1], await upload.read()
        except MultiPartException as error:
            raise _Failure(400, f"malformed multipart body: {error}", "invalid_request") from None
        where = key(request)
        saved = await store.upload(where, name, data)
        return _json(json_bytes(entry(where[1], saved, source="user")))

    async def container(request: Request) -> Response:
        where = key(request)
        opened = store.opened_at(where)
        if opened is None:
            raise FileNotFoundError(where[1])
        return _json(json_bytes({"id": where[1], "object": "container", "created_at": int(opened),
                                 "status": "running", "name": where[1]}))

    async def end(request: Request) -> Response:
        where = key(request)
        if not await store.close(where, interrupt=True):  # code running in it is stopped, not awaited
            raise FileNotFoundError(where[1])
        return _json(json_bytes({"id": where[1], "object": "container.deleted", "deleted": True}))

    async def failed(request: Request, error: Exception) -> Response:
        if isinstance(error, _Failure):
            return _json(error_body(error.status, str(error), error.code), error.status)
        status, code = status_for(error) or (500, "server_error")
        message = ("no such container, or no such file in it (its session may have ended)" if status == 404
                   else str(error))
        return _json(error_body(status, message, code), status)

    routes = [Route("/{container_id}", container, methods=["GET"]),
              Route("/{container_id}", end, methods=["DELETE"]),
              Route("/{container_id}/files", list_files, methods=["GET"]),
              Route("/{container_id}/files", create, methods=["POST"]),
              Route("/{container_id}/files/{file_id}", retrieve, methods=["GET"]),
              Route("/{container_id}/files/{file_id}", delete, methods=["DELETE"]),
              Route("/{container_id}/files/{file_id}/content", content, methods=["GET"])]

    async def no_route(request: Request, error: HTTPException) -> Response:
        return _json(error_body(error.status_code, f"no route {request.method} {request.url.path}", "not_found"),
                     error.status_code)

    handlers: dict = {exc: failed for exc in (_Failure, FileNotFoundError, InvalidFileName, QuotaExceeded,
                                              SandboxBusy, SandboxUnavailable)}
    handlers[HTTPException] = no_route
    return Starlette(routes=routes, exception_handlers=handlers)
