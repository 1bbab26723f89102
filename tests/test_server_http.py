"""The embedded default end to end over HTTP, with the official openai client, and the server's guard rails."""

import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from service import ROOT, clean_env, free_port, running_service



@pytest.fixture(scope="module")
def service():
    with running_service() as (base, process, seconds):
        print(f"\nstart to /health 200: {seconds * 1000:.0f} ms")
        yield base, process


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused-on-loopback", max_retries=0)


def test_code_runs_through_the_agent_and_sandbox(service):
    base, _ = service
    reply = client(base).responses.create(model="local-code-interpreter", input="import os\nprint(6 * 7, os.getcwd())")
    assert reply.status == "completed"
    assert "42 /tmp" in reply.output_text or "42 " in reply.output_text
    assert "exit code 0" in reply.output_text
    assert "No model is configured" in reply.output_text


def test_fenced_block_in_prose_streams(service):
    base, _ = service
    events = list(client(base).responses.create(
        model="local-code-interpreter", stream=True,
        input="Please run this:\n```python\nprint(sum(range(101)))\n```"))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "5050" in text


def test_failing_code_reports_its_error(service):
    base, _ = service
    text = client(base).responses.create(model="local-code-interpreter", input="1/0").output_text
    assert "ZeroDivisionError" in text and "exit code 1" in text


def test_message_without_code_explains_how_to_configure(service):
    base, _ = service
    text = client(base).responses.create(model="local-code-interpreter", input="what is the weather?").output_text
    assert "no code" in text and "AZURE_OPENAI_ENDPOINT" in text


@pytest.mark.parametrize("request_kwargs, status, words", [
    ({"model": "x", "input": "print(1)", "metadata": {"entity_id": "agent_unknown"}}, 404, "not found"),
    ({"model": "local-code-interpreter", "input": ""}, 400, "'input' is empty"),
    ({"model": "local-code-interpreter", "input": "   "}, 400, "'input' is empty"),
    ({"model": "local-code-interpreter", "input": "x" * (2 * 1024 * 1024)}, 413, "larger than"),
])
def test_bad_requests_get_clear_4xx_and_server_keeps_serving(service, request_kwargs, status, words):
    base, _ = service
    with pytest.raises(openai.APIStatusError) as caught:
        client(base).responses.create(**request_kwargs)
    assert caught.value.status_code == status
    assert words in str(caught.value)
    assert httpx.get(f"{base}/health").status_code == 200


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_malformed_bodies_get_400(service, body):
    base, _ = service
    answer = httpx.post(f"{base}/v1/responses", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert "JSON object" in answer.json()["error"]["message"]


def test_non_loopback_bind_without_token_exits_2_with_one_line():
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "--devui", "--host", "0.0.0.0",
                           "--port", str(port), "--no-browser"], env=clean_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DEVUI_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_token_is_enforced_when_set():
    with running_service(env=clean_env(DEVUI_AUTH_TOKEN="test-token-for-this-run")) as (base, _, _s):
        with pytest.raises(openai.AuthenticationError):
            client(base).responses.create(model="local-code-interpreter", input="print(1)")
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="test-token-for-this-run", max_retries=0)
        assert "1" in good.responses.create(model="local-code-interpreter", input="print(1)").output_text


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serves_a_conversation_and_sigterm_stops_it_within_two_seconds_on_either_event_loop(loop):
    with running_service(env=clean_env(LCI_EVENT_LOOP=loop)) as (base, process, _):
        first = client(base).responses.create(model="local-code-interpreter", input="x = 6 * 7")
        second = client(base).responses.create(model="local-code-interpreter", input="print(x)",
                                               previous_response_id=first.id)  # the conversation's live session
        assert "42" in second.output_text
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(5)
        elapsed = time.monotonic() - started
    print(f"\nSIGTERM to exit: {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    log = process.stdout.read()
    assert "Traceback" not in log and "Finished server process" in log and f"event loop {loop}" in log


def test_unreachable_model_gives_a_clear_reply_and_health_stays():
    env = clean_env(AZURE_OPENAI_ENDPOINT=f"http://127.0.0.1:{free_port()}", AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME="gpt",
                    AZURE_OPENAI_API_KEY="local-test-key", LCI_MODEL_MAX_RETRIES="0")
    with running_service(env=env) as (base, _, _s):
        text = client(base).responses.create(model="local-code-interpreter", input="hello").output_text
        assert "could not be reached" in text and "AZURE_OPENAI_ENDPOINT" in text
        streamed = "".join(e.delta for e in client(base).responses.create(
            model="local-code-interpreter", input="hello", stream=True) if e.type == "response.output_text.delta")
        assert "could not be reached" in streamed
        assert httpx.get(f"{base}/health").status_code == 200
