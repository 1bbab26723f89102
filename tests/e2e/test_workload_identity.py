"""The path a pod takes in AKS, end to end: workload identity -> Entra -> Azure OpenAI -> execute_code -> client.

The real service process runs with the pod's environment. From `overlays/dev` (rendered, not copied) come the
whole ConfigMap (AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME, LCI_*, and AZURE_OPENAI_ENDPOINT's scheme and path) and
AZURE_CLIENT_ID (the service account's annotation). Replaced: the endpoint's host (the overlay names a real
Azure host; it becomes the loopback stand-in's), the tenant ID (the webhook's cluster-wide setting) and
AZURE_AUTHORITY_HOST (login.microsoftonline.com in AKS; the Entra stand-in here). Both stand-ins speak TLS with a
certificate from a test CA, which the service trusts through SSL_CERT_FILE (httpx2 in the OpenAI SDK) and
REQUESTS_CA_BUNDLE (requests in azure-core, used by azure-identity). Not reached: real Entra token validation
(the stand-in compares the assertion with the token file, it does not verify its signature), Azure RBAC, and
the kubelet's token projection (the test writes the file).
"""
from __future__ import annotations

import glob
import re
import secrets
import time
from urllib.parse import urlparse

import httpx
import openai
import pytest

from service import running_service
from workload import Azure, Pod, render_overlay

pytestmark = pytest.mark.slow
AGENT = "local-code-interpreter"
RETRIES = 2
# Only the sandbox can print this: 6*7 computed there, its dropped uid and its per-run scratch directory.
CODE = "import os; print(f'answer={6*7} uid={os.getuid()} cwd={os.getcwd()}')"


def sandbox_answer(text: str) -> None:
    assert "answer=42" in text, text
    assert re.search(r"cwd=\S*lci-sandbox-", text), text
    assert "exit code 0" in text, text


@pytest.fixture(scope="module")
def pod() -> Pod:
    try:
        pod = Pod.from_overlay(render_overlay("dev"))
    except FileNotFoundError as error:
        pytest.skip(str(error))
    endpoint = urlparse(pod.config["AZURE_OPENAI_ENDPOINT"])
    assert endpoint.scheme == "https" and endpoint.hostname and not endpoint.query, endpoint
    assert pod.config["AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME"] and "AZURE_OPENAI_API_KEY" not in pod.config
    return pod


@pytest.fixture(scope="module")
def azure(pod, tmp_path_factory):
    with Azure(tmp_path_factory.mktemp("azure"), pod) as azure:
        azure.aoai.code = CODE
        yield azure


@pytest.fixture(scope="module")
def service(azure):
    token = secrets.token_urlsafe(24)  # the pod's DEVUI_AUTH_TOKEN comes from a Secret
    env = azure.env(DEVUI_AUTH_TOKEN=token, LCI_MODEL_MAX_RETRIES=str(RETRIES))
    assert not any("API_KEY" in name for name in env)
    with running_service(env) as (base, process, _):
        yield base, openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)
        assert process.poll() is None
        assert httpx.get(f"{base}/health").status_code == 200


@pytest.fixture
def mode(azure, service):
    """Set the Azure OpenAI stand-in's mode for one test; /health must stay 200 through it."""
    def set_mode(value, retry_after: int = 1):
        azure.aoai.mode, azure.aoai.retry_after = value, retry_after
        azure.aoai.attempts.clear()
    yield set_mode
    set_mode("ok")
    assert httpx.get(f"{service[0]}/health").status_code == 200


def ask(client: openai.OpenAI, stream: bool) -> str:
    if not stream:
        return client.responses.create(model=AGENT, input="What is 6*7? Run code.").output_text
    with client.responses.create(model=AGENT, input="What is 6*7? Run code.", stream=True) as events:
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_code_runs_in_the_sandbox_and_the_answer_reaches_the_client(azure, service, mode, stream):
    mode("ok")
    sandbox_answer(ask(service[1], stream))
    entra, attempts = azure.entra, azure.aoai.attempts
    assert entra.seen and not entra.refused, entra.refused
    assert [a["status"] for a in attempts] == [200, 200]
    call, result = attempts
    assert call["path"].startswith(urlparse(azure.endpoint()).path.rstrip("/") + "/openai/v1/responses")
    assert {a["body"]["model"] for a in attempts} == {azure.aoai.deployment}
    assert any(i.get("type") == "function_call_output" and "answer=42" in str(i.get("output"))
               for i in result["body"]["input"])
    for attempt in attempts:  # Entra's bearer token, never an API key
        assert attempt["headers"]["authorization"] == f"Bearer {entra.issued[-1]}"
        assert "api-key" not in attempt["headers"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_the_models_call_reaches_the_client_as_a_code_interpreter_call(service, mode, stream):
    """The model's `execute_code` call, its arguments streamed in pieces by the model's service, reaches the client
    as one `code_interpreter_call` with the whole code and what it printed (`http/tool_items.py`), no `function_call`
    for the client to run. Streamed, the call has its own events, before the answer's (`http/tool_stream.py`)."""
    mode("ok")
    if stream:
        with service[1].responses.create(model=AGENT, input="What is 6*7? Run code.", stream=True) as events:
            seen = list(events)
        response = seen[-1].response
        assert [(e.type, getattr(e, "output_index", None)) for e in seen[1:8]] == [
            ("response.output_item.added", 0), ("response.code_interpreter_call.in_progress", 0),
            ("response.code_interpreter_call_code.delta", 0), ("response.code_interpreter_call_code.done", 0),
            ("response.code_interpreter_call.interpreting", 0), ("response.code_interpreter_call.completed", 0),
            ("response.output_item.done", 0)]
        assert seen[4].code == CODE and seen[7].item == response.output[0]
        assert [e.sequence_number for e in seen] == list(range(len(seen)))
        assert {e.output_index for e in seen[8:-1]} == {1}  # the answer
    else:
        response = service[1].responses.create(model=AGENT, input="What is 6*7? Run code.")
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    call = response.output[0]
    assert call.code == CODE and "answer=42" in call.outputs[0].logs


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_clients_own_tool_is_offered_to_the_model_and_its_output_continues_the_run(azure, service, mode, stream):
    """A request's own function tool reaches the model beside `execute_code`; the model's call to it comes back to
    the client as a `function_call` (the server does not run it), and the client's output, sent with
    `previous_response_id`, is what the model reads next (`http/client_tools.py`)."""
    mode("ok")
    lookup = {"type": "function", "name": "lookup", "description": "The client's own store.",
              "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}}
    azure.aoai.tool, azure.aoai.arguments = "lookup", {"key": "k"}
    try:
        kwargs = {"model": AGENT, "input": "Look k up.", "tools": [lookup]}
        if stream:
            with service[1].responses.create(stream=True, **kwargs) as events:
                seen = list(events)
            asked = seen[-1].response
            done = [e for e in seen if e.type == "response.output_item.done"]  # for clients that read the events
            assert [e.item for e in done] == asked.output and done[0].item.arguments == '{"key": "k"}'
        else:
            asked = service[1].responses.create(**kwargs)
        offered = {tool.get("name") for tool in azure.aoai.attempts[0]["body"]["tools"]}
        assert offered == {"execute_code", "lookup"}
        assert [(item.type, item.name) for item in asked.output] == [("function_call", "lookup")]
        answered = service[1].responses.create(model=AGENT, previous_response_id=asked.id, tools=[lookup], input=[
            {"type": "function_call_output", "call_id": asked.output[0].call_id, "output": "value-of-k"}])
        assert "value-of-k" in answered.output_text
    finally:
        azure.aoai.tool = "execute_code"


def test_what_the_request_asks_of_the_model_reaches_it(azure, service, mode):
    """`tool_choice`, `parallel_tool_calls`, `text` (structured output: the OpenAI Agents SDK's `output_type`) and
    `reasoning` reach the model's service through the real model client (`http/run_options.py`); a required code
    call is required of the first model call only, so the run ends with an answer; `model` stays the server's."""
    mode("ok")
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    text = {"format": {"type": "json_schema", "name": "result", "schema": schema, "strict": True}}
    answer = service[1].responses.create(model="gpt-somebody-else", input="What is 6*7? Run code.",
                                         tool_choice={"type": "code_interpreter"}, parallel_tool_calls=False,
                                         text=text, reasoning={"effort": "low"})
    assert [item.type for item in answer.output] == ["code_interpreter_call", "message"]
    first, second = (attempt["body"] for attempt in azure.aoai.attempts[:2])
    assert first["tool_choice"] == {"type": "function", "name": "execute_code"} and "tool_choice" not in second
    for body in (first, second):
        assert body["text"]["format"] == text["format"] and body["reasoning"] == {"effort": "low"}
        assert body["parallel_tool_calls"] is False and body["model"] != "gpt-somebody-else"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_answer_is_not_repeated(service, mode, stream):
    mode("ok")
    text = ask(service[1], stream)
    assert text.count("answer=42") == 1, text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
@pytest.mark.parametrize("status, cause", [
    (401, r"401.*(credential|federated|workload identity)"),
    (403, r"403.*Cognitive Services OpenAI User"),
], ids=["401", "403"])
def test_refused_credentials_are_explained(service, mode, status, cause, stream):
    mode(status)
    text = ask(service[1], stream)
    assert re.search(cause, text, re.S), text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_rate_limit_is_retried_with_retry_after_then_explained(azure, service, mode, stream):
    mode(429, retry_after=2)
    started = time.monotonic()
    text = ask(service[1], stream)
    assert "429" in text and "rate limit" in text.lower(), text
    attempts = azure.aoai.attempts
    assert len(attempts) == 1 + RETRIES, [a["status"] for a in attempts]
    gaps = [b["time"] - a["time"] for a, b in zip(attempts, attempts[1:])]
    assert all(gap >= 1.9 for gap in gaps), gaps  # Retry-After: 2, not the SDK's sub-second first backoff
    assert [a["headers"].get("x-stainless-retry-count") for a in attempts] == [str(n) for n in range(1 + RETRIES)]
    assert time.monotonic() - started < 30


@pytest.fixture(scope="module")
def without_token_file(azure, tmp_path_factory):
    """A service whose AZURE_FEDERATED_TOKEN_FILE was never projected; yield (base URL, client, missing path)."""
    missing = tmp_path_factory.mktemp("unprojected") / "azure-identity-token"
    with running_service(azure.env(AZURE_FEDERATED_TOKEN_FILE=str(missing))) as (base, _, _):
        yield base, openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60), missing


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_missing_token_file_is_explained(azure, without_token_file, stream):
    base, client, _ = without_token_file
    seen = len(azure.aoai.attempts)
    text = ask(client, stream)
    assert re.search(r"Could not get a token.*AZURE_FEDERATED_TOKEN_FILE", text, re.S), text
    assert len(azure.aoai.attempts) == seen  # no model call without a token
    assert httpx.get(f"{base}/health").status_code == 200


def test_missing_token_file_message_names_the_file(without_token_file):
    _, client, missing = without_token_file
    text = ask(client, stream=False)
    assert str(missing) in text or "No such file" in text, text


FAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), "")


@pytest.mark.skipif(not FAKETIME, reason="libfaketime is not installed (run: bash scripts/tools/faketime.sh)")
def test_rotated_token_file_is_picked_up_when_the_access_token_expires(azure, tmp_path):
    """azure-identity re-reads the token file at most every 600 s: the service's wall clock is moved past that
    with libfaketime (monotonic time untouched), as the kubelet rotates the file well before its one-hour end."""
    clock = tmp_path / "faketime"
    clock.write_text("+0")
    env = azure.env(LD_PRELOAD=FAKETIME, FAKETIME_TIMESTAMP_FILE=str(clock), FAKETIME_NO_CACHE="1",
                    FAKETIME_DONT_FAKE_MONOTONIC="1")
    first = azure.rotate("before-rotation")
    azure.entra.expires_in = 3
    seen = len(azure.entra.seen)
    try:
        with running_service(env) as (base, _, _):
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
            sandbox_answer(ask(client, stream=True))
            second = azure.rotate("after-rotation")
            time.sleep(4)  # the access token expires: a new one is requested, the file is not re-read yet
            sandbox_answer(ask(client, stream=False))
            clock.write_text("+660")  # past azure-identity's 600 s token-file cache
            sandbox_answer(ask(client, stream=True))
            assert httpx.get(f"{base}/health").status_code == 200
    finally:
        azure.entra.expires_in = 3600
    assertions = [form["client_assertion"] for form in azure.entra.seen[seen:]]
    assert assertions == [first, first, second], assertions
    assert azure.aoai.attempts[-1]["headers"]["authorization"] == f"Bearer {azure.entra.issued[-1]}"
