"""The Azure Container Apps code interpreter sessions API (what LangChain, Semantic Kernel and LlamaIndex tools
speak), served from our session engine. Mounted at `/sessions`; clients set `pool_management_endpoint` to
`http://HOST:PORT/sessions`. docs/sessions-api.md has the contract, the sources and the choices made.

Two API families share the routes:
- "properties" (2024-02-02-preview, 2024-08-02-preview): `POST code/execute` with `{"properties": {...}}`,
  `POST files/upload`, `GET files`, `GET files/content/{name}`, `GET|DELETE files/{name}`;
- "flat" (2024-10-02-preview and later): `POST executions`, `POST files`, `GET files`, `GET files/{name}/content`,
  `GET|DELETE files/{name}`, `DELETE session`.
Every request names the session with `?identifier=`; the session key is (caller, identifier), so two callers
with the same identifier never share a session.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import logging
import mimetypes
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fair import Holdings, Tally
from ..identity import SCOPE_KEY, Caller
from ..sandbox.types import (ExecutionResult, FileInfo, InvalidFileName, QuotaExceeded, SandboxBusy,
                             SandboxUnavailable)
from .bodies import BadRequest, parse_body
from .downloads import Download
from .errors import send_json
from .files import attachment

log = logging.getLogger(__name__)

PROPERTIES_VERSIONS = ("2024-02-02-preview", "2024-08-02-preview")
FLAT_VERSIONS = ("2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview")
API_VERSIONS = PROPERTIES_VERSIONS + FLAT_VERSIONS
DATA_DIR = "/mnt/data"  # where the hosted service keeps a session's files; names may carry it as a prefix
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_TIMEOUT_SECONDS = 220  # the hosted service's cap on one execution
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file
MAX_RUNNING_OPERATIONS = 64  # asynchronous executions running at once on a replica...
MAX_RUNNING_OPERATIONS_PER_CALLER = 16  # ...and of one caller: three quarters stay for the others
MAX_KEPT_OPERATIONS = 1024  # finished ones kept for GET executions/{id}; past it, the oldest of the caller holding
# the most is dropped (fair.py), so one caller's many executions do not push out another's result before it is read
MAX_KEPT_OPERATION_BYTES = 64 * 1024 * 1024  # and what their results hold (output, figures: up to 8 MiB each); past
# it, the oldest finished one of the caller holding the most bytes is dropped (within the service's own share of the
# pod's memory, beside the conversations the lean path keeps)
OPERATION_TTL_SECONDS = 600
_IDENTIFIER = re.compile(r"^[^\s/\\\x00-\x1f\x7f]{1,128}$")


class ApiError(Exception):
    """A 4xx/5xx in the API's error shape: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.status,
                        headers=error.headers)


# -- request parsing ---------------------------------------------------------------------------------------

def api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise ApiError(400, "MissingApiVersionParameter",
                       f"The api-version query parameter is required; supported: {', '.join(API_VERSIONS)}")
    if version not in API_VERSIONS:
        raise ApiError(400, "UnsupportedApiVersion",
                       f"The api-version {version!r} is not supported; supported: {', '.join(API_VERSIONS)}")
    return version


def identifier(request: Request) -> str:
    value = request.query_params.get("identifier")
    if value is None or value == "":
        raise ApiError(400, "MissingIdentifier", "The identifier query parameter (the session's name) is required")
    if not _IDENTIFIER.match(value):
        raise ApiError(400, "InvalidIdentifier", "The identifier must be 1 to 128 characters without spaces, "
                                                 "slashes or control characters")
    return value


def file_name(raw: str, directory: str | None = None) -> str:
    """A client's file name (maybe `/mnt/data/...`, maybe with a `path` query parameter) → relative to the
    session directory. Anything that climbs out or is absolute elsewhere is refused here, and again by the
    engine, which opens every component without following symlinks."""
    name = raw
    base = (directory or DATA_DIR).rstrip("/")
    if base != DATA_DIR and not base.startswith(DATA_DIR + "/"):
        raise ApiError(400, "InvalidPath", f"path must be {DATA_DIR} or a directory below it, got {directory!r}")
    sub = base[len(DATA_DIR):].strip("/")
    if name.startswith(DATA_DIR + "/"):
        name = name[len(DATA_DIR) + 1:]
    elif sub:
        name = f"{sub}/{name}"
    parts = name.split("/")
    if (not name or name.startswith("/") or "\x00" in name or any(p in ("", ".", "..") for p in parts)
            or len(name.encode()) > 1024 or any(len(p.encode()) > 255 for p in parts)):
        raise ApiError(400, "InvalidFileName", f"Invalid file name {raw!r}: it must be relative to {DATA_DIR}, "
                                               "without '..', empty components or NUL")
    return name


async def json_body(request: Request) -> dict:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise ApiError(413, "RequestTooLarge", f"The request body is larger than {MAX_JSON_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, "RequestTooLarge", f"The request body is larger than {MAX_JSON_BYTES} bytes")
    try:
        return parse_body(bytes(body))  # strict, as the other JSON routes: nesting bombs, NaN, half surrogates
    except BadRequest as error:
        raise ApiError(400, "InvalidRequestBody", str(error)) from None


def execution_request(data: dict, default_type: str = "synchronous",
                      allowed: tuple[str, ...] = ("synchronous",)) -> tuple[str, float | None, str]:
    """(code, timeout, execution type) from the execution properties; refuses what we cannot honour."""
    code = data.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "InvalidRequestBody", "'code' must be a non-empty string of Python code")
    input_type = data.get("codeInputType", "inline")
    if not isinstance(input_type, str) or input_type.lower() != "inline":
        raise ApiError(400, "InvalidRequestBody", f"codeInputType {input_type!r} is not supported; use 'inline'")
    execution_type = data.get("executionType", default_type)
    if not isinstance(execution_type, str) or execution_type.lower() not in allowed:
        raise ApiError(400, "InvalidRequestBody", f"executionType {execution_type!r} is not supported here; use "
                       + " or ".join(repr(kind) for kind in allowed))
    timeout = data.get("timeoutInSeconds")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            raise ApiError(400, "InvalidRequestBody", f"timeoutInSeconds must be a number from 1 to {MAX_TIMEOUT_SECONDS}")
    return code, timeout, execution_type.lower()


# -- results and file entries -----------------------------------------------------------------------------

def result_value(result: ExecutionResult):
    """What the hosted service puts in `result`: an image of the code's figure, else the last expression's value
    (as JSON where it is a plain literal, such as 42 or 'text'; else its repr), else ""."""
    if result.images:
        image = result.images[0]
        return {"type": "image", "format": image.media_type.split("/")[-1],
                "base64_data": base64.b64encode(image.data).decode("ascii")}
    if result.value is None:
        return ""
    try:
        literal = ast.literal_eval(result.value)
        json.dumps(literal, allow_nan=False)
        return literal
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return result.value


def failed(result: ExecutionResult) -> bool:
    return result.timed_out or result.exit_code != 0


def stderr_text(result: ExecutionResult) -> str:
    stderr = result.stderr
    extra = []
    if result.timed_out and "timed out" not in stderr.lower():
        extra.append(f"TimeoutError: the execution timed out after {result.duration_ms / 1000:.1f} s")
    if result.notice and result.notice not in stderr:
        extra.append(result.notice)
    if extra:
        stderr = (stderr.rstrip("\n") + "\n" if stderr else "") + "\n".join(extra) + "\n"
    return stderr


def error_parts(result: ExecutionResult) -> tuple[str, str]:
    """(error_name, error_message) from the last 'Name: message' line of a traceback."""
    if result.timed_out:
        return "TimeoutError", "the execution timed out"
    if not failed(result):
        return "", ""
    for line in reversed(result.stderr.strip().splitlines()):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)?): ?(.*)$", line)
        if match:
            return match.group(1), match.group(2)
    return "Error", f"exit code {result.exit_code}"


def execution_body(execution_id: str, ident: str, kind: str, result: ExecutionResult | None) -> dict:
    """The 2024-10-02-preview execution resource; `result` None while an asynchronous one is running."""
    body = {"id": execution_id, "identifier": ident, "sessionId": ident, "executionType": kind}
    if result is None:
        return dict(body, status="Running")
    name, message = error_parts(result)
    stderr = stderr_text(result)
    value = result_value(result)
    duration = int(round(result.duration_ms))
    return dict(body, status="Failed" if failed(result) else "Succeeded",
                result={"stdout": result.stdout, "stderr": stderr, "executionResult": value,
                        "executionTimeInMilliseconds": duration},
                rawResult={"hresult": 1 if failed(result) else 0, "result": value, "error_name": name,
                           "error_message": message, "error_stack_trace": stderr if failed(result) else "",
                           "stdout": result.stdout, "stderr": stderr,
                           "diagnosticInfo": {"executionDuration": duration, "identifier": ident},
                           "operationId": execution_id})


@dataclass
class Operation:
    """An asynchronous execution: which session it runs in, its task, when it started."""

    identifier: str
    task: asyncio.Task
    started: float
    size: int = 0  # bytes its result holds, once finished


def result_bytes(result: ExecutionResult) -> int:
    """What a kept result holds in memory, near enough: its output, value and figures."""
    return (len(result.stdout) + len(result.stderr) + len(result.value or "")
            + sum(len(image.data) for image in result.images))


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Ids:
    """The `$id` numbers the hosted service puts on every object of a "properties" response."""

    def __init__(self):
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return str(self.n)


def properties_entry(info: FileInfo, ids: Ids) -> dict:
    return {"$id": ids(), "properties": {"$id": ids(), "filename": info.name, "size": info.size,
                                         "lastModifiedTime": iso(info.modified)}}


def flat_entry(info: FileInfo) -> dict:
    return {"name": info.name, "sizeInBytes": info.size, "lastModifiedAt": iso(info.modified),
            "contentType": media_type(info), "type": "File"}


def media_type(info: FileInfo) -> str:
    if info.media_type and info.media_type != "application/octet-stream":
        return info.media_type
    return mimetypes.guess_type(info.name)[0] or "application/octet-stream"


def listing(version: str, infos: list[FileInfo]) -> dict:
    if version in PROPERTIES_VERSIONS:
        ids = Ids()
        top = ids()
        return {"$id": top, "value": [properties_entry(info, ids) for info in infos]}
    return {"value": [flat_entry(info) for info in infos]}


# -- the app ----------------------------------------------------------------------------------------------

class SessionsApi:
    """The routes, bound to one SessionManager; each request's caller comes from the shared guard."""

    def __init__(self, manager, settings):
        self.manager, self.settings = manager, settings
        # (owner, execution id) → asynchronous execution, each caller's oldest first
        self.operations: Holdings[Operation] = Holdings()
        self.kept_bytes = Tally()  # result bytes of the finished ones, by caller
        limits = getattr(settings, "sessions", None)  # SessionLimits (LCI_MAX_UPLOAD_MB), shared with the engine
        self.max_upload_mb = getattr(limits, "max_upload_mb", 128)
        self.max_upload = self.max_upload_mb * 1024 * 1024

    @staticmethod
    async def caller(request: Request) -> Caller:
        """The caller the shared guard (`http/guard.py`) authenticated; this app never checks credentials itself.
        Mounted without the guard it serves nobody."""
        present = request.scope.get(SCOPE_KEY)
        if isinstance(present, Caller):
            return present
        raise ApiError(401, "Unauthorized", "no authenticated caller: serve this API behind the guard",
                       {"WWW-Authenticate": "Bearer"})

    async def _context(self, request: Request) -> tuple[str, tuple[str, str]]:
        caller = await self.caller(request)  # before anything else is looked at
        version = api_version(request)
        return version, (caller.id, identifier(request))

    async def _run(self, key, code: str, timeout: float | None) -> ExecutionResult:
        # The engine enforces the server's per-execution limit (LCI_TIMEOUT_SECONDS); `timeoutInSeconds` is
        # validated but not applied (docs/sessions-api.md).
        return await self.manager.run(key, code)

    # POST code/execute ("properties" family)
    async def execute(self, request: Request) -> Response:
        version, key = await self._context(request)
        data = await json_body(request)
        properties = data.get("properties")
        if not isinstance(properties, dict):
            raise ApiError(400, "InvalidRequestBody", "The request body must be {\"properties\": {\"codeInputType\": "
                           "\"inline\", \"executionType\": \"synchronous\", \"code\": \"...\"}}")
        code, timeout, _ = execution_request(properties)
        result = await self._run(key, code, timeout)
        return JSONResponse({"$id": "1", "properties": {
            "$id": "2",
            "status": "Failure" if failed(result) else "Success",
            "stdout": result.stdout,
            "stderr": stderr_text(result),
            "result": result_value(result),
            "executionTimeInMilliseconds": int(round(result.duration_ms)),
        }})

    # POST executions ("flat" family); GET executions/{id} for an asynchronous one
    async def executions(self, request: Request) -> Response:
        version, key = await self._context(request)
        data = await json_body(request)
        if isinstance(data.get("properties"), dict):  # tolerate the older envelope
            data = data["properties"]
        code, timeout, kind = execution_request(data, allowed=("synchronous", "asynchronous"))
        execution_id = str(uuid.uuid4())
        if kind == "synchronous":
            result = await self._run(key, code, timeout)
            return JSONResponse(execution_body(execution_id, key[1], "synchronous", result), status_code=202,
                                headers={"Operation-Id": execution_id})
        self._forget_old_operations(key[0])
        running = [owner for (owner, _), op in self.operations.items() if not op.task.done()]
        if len(running) >= MAX_RUNNING_OPERATIONS:
            raise ApiError(429, "TooManyRequests", f"{MAX_RUNNING_OPERATIONS} asynchronous executions are running "
                           "on this replica; retry later", {"Retry-After": "1"})
        if running.count(key[0]) >= MAX_RUNNING_OPERATIONS_PER_CALLER:
            raise ApiError(429, "TooManyRequests", f"{MAX_RUNNING_OPERATIONS_PER_CALLER} asynchronous executions "
                           "of yours are running, the most one caller may have at once; retry when one has "
                           "finished", {"Retry-After": "1"})
        task = asyncio.get_running_loop().create_task(self._run(key, code, timeout))
        name = (key[0], execution_id)
        self.operations[name] = Operation(key[1], task, time.monotonic())
        task.add_done_callback(lambda done: self._finished(name, done))
        location = (f"{request.scope.get('root_path', '')}/executions/{execution_id}"
                    f"?api-version={version}&identifier={quote(key[1], safe='')}")
        return JSONResponse(execution_body(execution_id, key[1], "Asynchronous", None), status_code=202,
                            headers={"Operation-Id": execution_id, "Operation-Location": location})

    async def execution(self, request: Request) -> Response:
        version, key = await self._context(request)
        operation = self.operations.get((key[0], request.path_params["id"]))
        if operation is None or operation.identifier != key[1]:
            raise ApiError(404, "ExecutionNotFound", "No asynchronous execution with that id in this session "
                                                     f"(results are kept {OPERATION_TTL_SECONDS // 60} minutes)")
        if not operation.task.done():
            return JSONResponse(execution_body(request.path_params["id"], key[1], "Asynchronous", None))
        error = operation.task.exception()
        if error is not None:
            raise error  # mapped to the API's error shape like a synchronous one
        return JSONResponse(execution_body(request.path_params["id"], key[1], "Asynchronous",
                                           operation.task.result()))

    def _finished(self, name: tuple[str, str], task: asyncio.Task) -> None:
        """A result to keep for GET (an error too, not logged): its bytes count from now."""
        operation = self.operations.get(name)
        if task.cancelled() or task.exception() is not None or operation is None or operation.task is not task:
            return
        operation.size = result_bytes(task.result())
        self.kept_bytes.add(name[0], operation.size)
        self._forget_old_operations(name[0])

    def _forget_old_operations(self, requester: str) -> None:
        """Finished executions past their time; then, past either bound (how many, how many bytes), the oldest
        finished one of the caller holding the most (never of a caller holding less than `requester`)."""
        now = time.monotonic()
        for name, op in self.operations.items():
            if op.task.done() and now - op.started > OPERATION_TTL_SECONDS:
                self._drop(name)
        while (over_bytes := self.kept_bytes.total > MAX_KEPT_OPERATION_BYTES) \
                or len(self.operations) > MAX_KEPT_OPERATIONS:
            ranked = self.operations.give_way(requester, self.kept_bytes.of if over_bytes else None)
            name = next((name for name, op in ranked if op.task.done()), None)
            if name is None:
                break
            self._drop(name)

    def _drop(self, name: tuple[str, str]) -> None:
        operation = self.operations.pop(name)
        if operation is not None:
            self.kept_bytes.add(name[0], -operation.size)

    # POST files/upload ("properties") and POST files ("flat")
    async def upload(self, request: Request) -> Response:
        version, key = await self._context(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_upload + MULTIPART_SLACK:
            raise self._too_large()
        form = await self._form(request)
        try:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            if not uploads:
                raise ApiError(400, "InvalidRequestBody", "The multipart body has no file part (with a filename)")
            directory = request.query_params.get("path")
            named = []
            for upload in uploads:
                if not upload.filename:
                    raise ApiError(400, "InvalidFileName", "The file part has no filename")
                named.append((file_name(upload.filename, directory), upload))
            infos = []
            for name, upload in named:
                if upload.size is not None and upload.size > self.max_upload:
                    raise self._too_large()
                await upload.seek(0)
                data = await upload.read()
                if len(data) > self.max_upload:
                    raise self._too_large()
                infos.append(await self.manager.upload(key, name, data))
        finally:
            await form.close()
        if version in PROPERTIES_VERSIONS:
            return JSONResponse(listing(version, infos))
        if len(infos) == 1:
            return JSONResponse(flat_entry(infos[0]))
        return JSONResponse({"value": [flat_entry(info) for info in infos]})

    def _too_large(self) -> ApiError:
        return ApiError(413, "RequestEntityTooLarge",
                        f"The file is larger than the upload limit of {self.max_upload_mb} MB")

    async def _form(self, request: Request):
        limit = self.max_upload + MULTIPART_SLACK
        stream = request.stream()
        headers = request.headers
        first = b""
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            # Semantic Kernel (1.45) leaves "Content-Type: application/json" from its last execution on its shared
            # HTTP client, which then wins over the multipart type of its uploads: take the boundary from the
            # body's first line when it is a multipart delimiter.
            async for chunk in stream:
                first += chunk
                if b"\r\n" in first or len(first) > 200:
                    break
            line = first.split(b"\r\n", 1)[0]
            if not (first.startswith(b"--") and b"\r\n" in first and 2 < len(line) <= 72
                    and re.fullmatch(rb"--[0-9A-Za-z'()+_,\-./:=?]+", line)):
                raise ApiError(400, "InvalidRequestBody", "Upload files as multipart/form-data with a 'file' part")
            mutable = headers.mutablecopy()
            mutable["content-type"] = f"multipart/form-data; boundary={line[2:].decode('ascii')}"
            headers = mutable

        async def capped() -> AsyncIterator[bytes]:
            seen = len(first)
            if first:
                yield first
            async for chunk in stream:
                seen += len(chunk)
                if seen > limit:
                    raise self._too_large()
                yield chunk

        parser = MultiPartParser(headers, capped(), max_files=16, max_fields=16)
        try:
            return await parser.parse()
        except MultiPartException as error:
            raise ApiError(400, "InvalidRequestBody", f"Malformed multipart body: {error}") from None

    # GET files
    async def list_files(self, request: Request) -> Response:
        version, key = await self._context(request)
        infos = await self.manager.files(key)
        directory = request.query_params.get("path")
        if directory and directory.rstrip("/") != DATA_DIR:
            prefix = file_name(directory.rstrip("/") + "/x").rsplit("/", 1)[0] + "/"
            infos = [FileInfo(i.name[len(prefix):], i.size, i.modified, i.media_type)
                     for i in infos if i.name.startswith(prefix)]
        return JSONResponse(listing(version, infos))

    async def _info(self, key, name: str) -> FileInfo:
        for info in await self.manager.files(key):
            if info.name == name:
                return info
        raise FileNotFoundError(name)

    # GET files/content/{name} ("properties") and GET files/{name}/content ("flat")
    async def download(self, request: Request) -> Download:
        version, key = await self._context(request)
        name = file_name(request.path_params["name"], request.query_params.get("path"))
        # As every other route sends a session's file: the code wrote it, so a browser pointed at this URL saves
        # it rather than running it as a page of this origin (API clients read the same bytes).
        return attachment(await self.manager.open_file(key, name), name)

    # GET files/{name}
    async def file_metadata(self, request: Request) -> Response:
        version, key = await self._context(request)
        name = file_name(request.path_params["name"], request.query_params.get("path"))
        info = await self._info(key, name)
        if version in PROPERTIES_VERSIONS:
            return JSONResponse(listing(version, [info]))
        return JSONResponse(flat_entry(info))

    # DELETE files/{name}
    async def delete_file(self, request: Request) -> Response:
        version, key = await self._context(request)
        name = file_name(request.path_params["name"], request.query_params.get("path"))
        await self.manager.delete(key, name)
        if version in PROPERTIES_VERSIONS:
            return JSONResponse({"message": "file deleted successfully"})
        return Response(status_code=204)

    # DELETE session (what LangChain's tools call on close)
    async def delete_session(self, request: Request) -> Response:
        version, key = await self._context(request)
        await self.manager.close(key, interrupt=True)  # deleted now: code running in it is stopped, not awaited
        return Response(status_code=204)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Map the engine's and our own errors to the API's error shape; never let one request take others down."""

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error)
        except SandboxBusy as error:
            return error_response(ApiError(429, "TooManyRequests", str(error) or "all sessions are busy: retry",
                                           {"Retry-After": "1"}))
        except InvalidFileName as error:
            return error_response(ApiError(400, "InvalidFileName", str(error)))
        except QuotaExceeded as error:
            return error_response(ApiError(413, "RequestEntityTooLarge", str(error)))
        except FileNotFoundError as error:
            name = error.args[0] if error.args else ""
            return error_response(ApiError(404, "FileNotFound", f"File {name!s} was not found in the session"))
        except SandboxUnavailable as error:
            return error_response(ApiError(503, "ServiceUnavailable", str(error)))
        except Exception:  # noqa: BLE001
            log.exception("sessions API %s %s failed after %.0f ms", request.method, request.url.path,
                          (time.monotonic() - started) * 1000)
            return error_response(ApiError(500, "InternalServerError", "internal error (see the server log)"))

    return endpoint


async def _not_found(request: Request, exc) -> Response:
    return error_response(ApiError(404, "NotFound", f"No route {request.method} {request.url.path}"))


async def _method_not_allowed(request: Request, exc) -> Response:
    return error_response(ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}"))


def build_aca_app(manager, settings) -> Starlette:
    """The sessions API as a Starlette app, to mount at `/sessions` behind the shared guard, which authenticates
    (the DevUI token; Microsoft Entra ID tokens there only) and writes its errors with `send_aca_error`."""
    api = SessionsApi(manager, settings)
    g = _guarded
    routes = [
        Route("/code/execute", g(api.execute), methods=["POST"]),
        Route("/executions", g(api.executions), methods=["POST"]),
        Route("/executions/{id}", g(api.execution), methods=["GET"]),
        Route("/files/upload", g(api.upload), methods=["POST"]),
        Route("/files", g(api.upload), methods=["POST"]),
        Route("/files", g(api.list_files), methods=["GET"]),
        Route("/files/content/{name:path}", g(api.download), methods=["GET"]),
        Route("/files/{name:path}/content", g(api.download), methods=["GET"]),
        Route("/files/{name:path}", g(api.file_metadata), methods=["GET"]),
        Route("/files/{name:path}", g(api.delete_file), methods=["DELETE"]),
        Route("/session", g(api.delete_session), methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _method_not_allowed})
    app.state.api = api
    return app


_GUARD_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 413: "RequestEntityTooLarge",
                429: "TooManyRequests", 500: "InternalServerError"}


async def send_aca_error(send, status: int, message: str, code: str, headers=None) -> None:
    """The guard's errors under `/sessions` (401, 403, 413, ...) in this API's shape, as its own routes write them."""
    body = json.dumps({"error": {"code": _GUARD_CODES.get(status, "Error"), "message": message}}).encode()
    await send_json(send, status, body, headers)
