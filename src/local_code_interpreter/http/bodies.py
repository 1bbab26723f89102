"""JSON request bodies, as every JSON route of ours takes them: read whole (the guard has bounded their size), then
parsed strictly: a JSON object, no NaN or Infinity, nested at most `MAX_DEPTH` levels, no half surrogate pair.

Each check costs little against the body's size: a client may send a body as large as the guard allows, so
nothing here walks it in Python byte by byte (`_depth_exceeds`). The routes map `BadRequest` to their own API's
error shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import Receive

MAX_DEPTH = 32


class BadRequest(ValueError):
    def __init__(self, message: str, code: str = "invalid_request", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


async def read_body(receive: Receive) -> bytes | None:
    """The whole body (the guard has already bounded it), or None if the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_body(body: bytes) -> dict:
    """A JSON object, or BadRequest: invalid JSON, NaN/Infinity, nesting deeper than MAX_DEPTH, a string holding
    half a surrogate pair (`"\\ud800"` alone: valid JSON, but no Unicode text; it cannot be encoded again)."""
    if _depth_exceeds(body, MAX_DEPTH):
        raise BadRequest(f"the request body is nested deeper than {MAX_DEPTH} levels", "invalid_json")
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except BadRequest:
        raise
    except (ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object", "invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
        raise BadRequest("the request body has a string with half a surrogate pair (a lone \\uD800-\\uDFFF "
                         "escape), which is not Unicode text", "invalid_json")
    return value


def _no_constant(name: str) -> Any:
    raise BadRequest(f"the request body contains {name}, which is not valid JSON", "invalid_json")


_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")  # rare; only then are the strings walked


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


_SQUARE = bytes.maketrans(b"{}", b"[]")  # for depth an object is a bracket pair as an array is
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def _depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit`, found before parsing (a nesting bomb is never built).

    Escaped backslashes and quotes are dropped (left to right, as a parser reads them), then everything but
    brackets and quotes; too few brackets to reach `limit` end it there (most bodies). Else what lies between
    quotes (the strings) goes too, and with objects' braces as brackets, each pass of `replace` removes the
    innermost pairs, one level: the depth is the number of passes that empty the brackets, and at most `limit` + 1
    are made. All of it runs in `bytes` methods: 0.08 ms for a 20 KiB request of 200 messages, where a Python
    loop over the bytes cost 0.55 ms, 7x the parse; at most about twice the parse for 600 KiB bodies built to be
    slow to check. Brackets that never pair up (not JSON) stop it early: the parser says what is wrong with them."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(_SQUARE, _NOT_STRUCTURE)
    if kept.count(b"[") <= limit:  # most bodies: too few brackets to nest that deep, strings' included
        return False
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])
    for _ in range(limit + 1):
        if not kept:
            return False
        inner = kept.replace(b"[]", b"")
        if len(inner) == len(kept):
            return False
        kept = inner
    return True


METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512  # the OpenAI API's bounds


def check_metadata(metadata: Any) -> None:
    """`metadata`, when given, is an object of string values within the OpenAI API's bounds: at most 16 pairs, keys
    of at most 64 characters, values of at most 512. Kept with what it names (a conversation, a response), so
    without them each of the conversations a server keeps could hold a whole request body of it."""
    if metadata is None:
        return
    if not (isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise BadRequest("'metadata' must be an object of string values", "invalid_type")
    if len(metadata) > METADATA_PAIRS:
        raise BadRequest(f"'metadata' has {len(metadata)} pairs: at most {METADATA_PAIRS}", "invalid_value")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY:
            raise BadRequest(f"'metadata' key {key[:METADATA_KEY]!r}... is {len(key)} characters long: at most "
                             f"{METADATA_KEY}", "invalid_value")
        if len(value) > METADATA_VALUE:
            raise BadRequest(f"'metadata.{key}' is {len(value)} characters long: at most {METADATA_VALUE}",
                             "invalid_value")
