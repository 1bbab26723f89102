"""Wrong types anywhere: every JSON route, given a rich valid body with one value anywhere in it replaced by a value
of another type (or removed), answers 2xx or a 4xx in its API's error shape; never a 5xx, never a stream that
fails with a server error. The whole app in process, with sessions (the monty back end: fast, no files).

Not here: `/v1/responses` for the DevUI page (`metadata.entity_id`), which DevUI serves as its page expects: a
malformed input is a stream whose response failed, as DevUI reports any error of a run."""

from __future__ import annotations

import asyncio
import copy
import json

import httpx
import pytest

from inprocess import app_with_sessions

# A value of every JSON type, and the edges that broke parsers before: huge numbers, NaN and Infinity (not JSON,
# but Python's json writes and reads them), NUL, half a surrogate pair, arrays nested past the limit (40 levels)
# and a nesting bomb (100,000 levels: a RecursionError in a parser that does not check first).
BOMB = "<a nesting bomb>"
WRONG = [None, True, 0, -1, 1.5, 10**30, float("nan"), float("-inf"), "", "x", [], [1], {}, {"a": 1}, "\x00",
         "\ud800", json.loads("[" * 40 + "]" * 40), BOMB]
DELETED = object()

ITEMS = [
    {"type": "message", "role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "input_text", "text": "print(1)"}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
    {"type": "function_call", "call_id": "c1", "name": "execute_code", "arguments": "{\"code\": \"1\"}"},
    {"type": "function_call_output", "call_id": "c1", "output": "1"},
    {"type": "code_interpreter_call", "id": "ci1", "code": "2", "outputs": [{"type": "logs", "logs": "2"}]},
    {"role": "user", "content": "print(2)"},
]
RESPONSE = {
    "model": "local-code-interpreter", "input": ITEMS, "instructions": "x", "temperature": 0.5, "top_p": 1,
    "max_output_tokens": 100, "metadata": {"k": "v"}, "store": True, "tool_choice": "auto",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "parallel_tool_calls": True, "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"}, "user": "u",
    "truncation": "disabled",
}
V1, FLAT = "2024-02-02-preview", "2025-02-02-preview"
EXECUTE = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "print(1)",
                          "timeoutInSeconds": 30}}
EXECUTIONS = {"codeInputType": "inline", "executionType": "synchronous", "code": "print(1)", "timeoutInSeconds": 30}


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, path + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, path + (index,))


def _variants(base: dict):
    """(path, wrong value, body) for every path of `base` and every value of WRONG, and the path removed."""
    for path in _paths(base):
        for wrong in WRONG + ([DELETED] if path else []):
            body = copy.deepcopy(base)
            if not path:
                body = wrong
            else:
                parent = body
                for key in path[:-1]:
                    parent = parent[key]
                if wrong is DELETED:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = wrong
            encoded = json.dumps(body).encode("utf-8", "surrogatepass")
            yield path, wrong, encoded.replace(json.dumps(BOMB).encode(), b"[" * 100000 + b"]" * 100000)


def _openai_error(answer: httpx.Response) -> bool:
    error = answer.json().get("error")
    return isinstance(error, dict) and {"message", "type", "code"} <= set(error)


def _sessions_error(answer: httpx.Response) -> bool:
    error = answer.json().get("error")
    return isinstance(error, dict) and {"code", "message"} <= set(error)


async def _sweep(client: httpx.AsyncClient, path: str, base: dict, error_shape) -> tuple[int, list]:
    first = await client.post(path, json=base)
    assert first.status_code < 300, first.text[:300]  # the base is valid: each variant changes one thing
    wrong = []
    count = 0
    for where, value, body in _variants(base):
        count += 1
        answer = await client.post(path, content=body, headers={"content-type": "application/json"})
        fine = answer.status_code < 500
        if fine and answer.status_code >= 400:
            try:
                fine = error_shape(answer)
            except ValueError:
                fine = False
        if fine and answer.headers.get("content-type", "").startswith("text/event-stream"):
            fine = "response.failed" not in answer.text or "server_error" not in answer.text
        if not fine:
            wrong.append((where, repr(value)[:20], answer.status_code, answer.text[:160]))
    return count, wrong


@pytest.mark.parametrize("route", ["responses", "responses streamed", "conversations", "conversation items",
                                   "page conversation items", "conversation update", "sessions code/execute",
                                   "sessions executions"])
def test_a_wrong_type_anywhere_is_a_4xx_in_the_apis_error_shape(route):
    async def run():
        async with app_with_sessions() as (client, _sessions):
            if route.startswith("responses"):
                base = dict(RESPONSE, stream=route.endswith("streamed"))
                return await _sweep(client, "/v1/responses", base, _openai_error)
            if route == "conversations":
                return await _sweep(client, "/v1/conversations", {"items": ITEMS, "metadata": {"a": "b"}},
                                    _openai_error)
            if route == "conversation items":
                created = (await client.post("/v1/conversations", json={"metadata": {}})).json()["id"]
                return await _sweep(client, f"/v1/conversations/{created}/items", {"items": ITEMS}, _openai_error)
            if route == "page conversation items":  # a conversation of the DevUI page: DevUI keeps its items
                entity = (await client.get("/v1/entities")).json()["entities"][0]["id"]
                created = (await client.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()
                page_items = [item for item in ITEMS if item.get("role") in ("user", "assistant")]  # what it takes
                return await _sweep(client, f"/v1/conversations/{created['id']}/items", {"items": page_items},
                                    _openai_error)
            if route == "conversation update":  # DevUI's route (`client.conversations.update`)
                created = (await client.post("/v1/conversations", json={"metadata": {}})).json()["id"]
                return await _sweep(client, f"/v1/conversations/{created}", {"metadata": {"a": "b"}}, _openai_error)
            if route == "sessions code/execute":
                return await _sweep(client, f"/sessions/code/execute?api-version={V1}&identifier=s", EXECUTE,
                                    _sessions_error)
            return await _sweep(client, f"/sessions/executions?api-version={FLAT}&identifier=s", EXECUTIONS,
                                _sessions_error)

    count, wrong = asyncio.run(run())
    assert count > 20
    assert not wrong, f"{len(wrong)} of {count} variants: {wrong[:5]}"
