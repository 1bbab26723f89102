"""A stand-in for Azure OpenAI's Responses API (`POST /openai/v1/responses`), streaming and not.

It accepts only a bearer token its Entra stand-in issued and only its one deployment. In mode "ok" it first
asks for `tool` (`execute_code` with `code`, or a tool of the API client's own with `arguments`), then answers with
a message quoting the tool's output. Modes 401, 403 and 429 answer every request with that error, the way Azure
OpenAI does.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

_ERRORS = {
    401: {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."},
    403: {"code": "PermissionDenied", "message": "The principal lacks the required data action "
          "Microsoft.CognitiveServices/accounts/OpenAI/deployments/responses/action."},
    429: {"code": "429", "message": "Requests to the Responses API have exceeded the token rate limit of your "
          "current pricing tier. Please retry after {retry_after} seconds."},
}


@dataclass
class Aoai:
    deployment: str
    tokens: list[str]  # the access tokens Entra issued (shared with the Entra stand-in)
    code: str = "print(6*7)"
    tool: str = "execute_code"  # the tool it calls first; another name: a client's own, called with `arguments`
    arguments: dict = field(default_factory=dict)
    mode: object = "ok"  # "ok" | 401 | 403 | 429
    retry_after: int = 1
    attempts: list[dict] = field(default_factory=list)  # each request: time, headers, body, status
    lock: threading.Lock = field(default_factory=threading.Lock)


def _response(model: str, output: list[dict], status: str = "completed") -> dict:
    return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
            "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}}


_ids = itertools.count(1)


def _tool_output(items) -> str | None:
    """The text of the last function_call_output in the request's input, if any."""
    outputs = [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"] \
        if isinstance(items, list) else []
    if not outputs:
        return None
    output = outputs[-1].get("output")
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return str(output)


def _events(model: str, item: dict) -> list[dict]:
    """The server-sent events for a response with one output item."""
    events = [{"type": "response.created", "response": _response(model, [], "in_progress")},
              {"type": "response.output_item.added", "output_index": 0,
               "item": dict(item, status="in_progress", **({"arguments": ""} if "arguments" in item else
                                                          {"content": []}))}]
    if item["type"] == "function_call":
        events += [{"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": 0,
                    "delta": item["arguments"]},
                   {"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": 0,
                    "name": item["name"], "arguments": item["arguments"]}]
    else:
        text = item["content"][0]["text"]
        events += [{"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                    "content_index": 0, "delta": text, "logprobs": []},
                   {"type": "response.output_text.done", "item_id": item["id"], "output_index": 0,
                    "content_index": 0, "text": text, "logprobs": []}]
    events += [{"type": "response.output_item.done", "output_index": 0, "item": item},
               {"type": "response.completed", "response": _response(model, [item])}]
    return [dict(event, sequence_number=n) for n, event in enumerate(events)]


class AoaiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        aoai: Aoai = self.server.state
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        attempt = {"time": time.monotonic(), "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": body}
        with aoai.lock:
            aoai.attempts.append(attempt)
        status, payload = self._answer(aoai, attempt)
        attempt["status"] = status
        if status != 200:
            headers = {"retry-after": str(aoai.retry_after)} if status == 429 else {}
            return self._send(status, json.dumps({"error": payload}).encode(), "application/json", headers)
        if not body.get("stream"):
            return self._send(200, json.dumps(_response(aoai.deployment, [payload])).encode(), "application/json")
        stream = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in _events(aoai.deployment, payload))
        self._send(200, stream.encode(), "text/event-stream")

    def _answer(self, aoai: Aoai, attempt: dict) -> tuple[int, dict]:
        """(200, output item) or (status, Azure-style error)."""
        bearer = attempt["headers"].get("authorization", "")
        if self.path.split("?")[0] != "/openai/v1/responses":
            return 404, {"code": "404", "message": f"Resource not found: {self.path}"}
        if "api-key" in attempt["headers"] or bearer.removeprefix("Bearer ") not in aoai.tokens:
            return 401, _ERRORS[401]
        if attempt["body"].get("model") != aoai.deployment:
            return 404, {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}
        if aoai.mode != "ok":
            error = _ERRORS[aoai.mode]
            return aoai.mode, dict(error, message=error["message"].format(retry_after=aoai.retry_after))
        output = _tool_output(attempt["body"].get("input"))
        n = next(_ids)
        if output is None:
            arguments = {"code": aoai.code} if aoai.tool == "execute_code" else aoai.arguments
            return 200, {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": aoai.tool,
                         "arguments": json.dumps(arguments), "status": "completed"}
        return 200, {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": f"The sandbox printed:\n{output}", "annotations": []}]}

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {"content-type": content_type, "content-length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
