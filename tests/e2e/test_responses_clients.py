"""The lean `/v1/responses` proven with the OpenAI Agents SDK, unchanged, in its own virtual environment
(scripts/tools/aca-clients.sh; its pins conflict with the service's), against the real service process on the
subprocess sandbox: the SDK's agent uses the service as its model.

The SDK runs every function call a response holds; the service's own `execute_code` calls reach it as
`code_interpreter_call` items (`http/tool_items.py`), done by the time it sees them, so each run completes: a plain
run, the SDK's own history sent back whole (`to_input_list()`), a `previous_response_id` chain that keeps the
sandbox session's state, the same through a conversation it names (`conversation_id`), a streamed run (the call's
own events first: `http/tool_stream.py`), its conversation session (`OpenAIConversationsSession`: the history kept
in a conversation through the Conversations API, its latest item popped: `http/conversation_items.py`), an agent
with a function tool of its own, an agent written for the OpenAI API's hosted code interpreter
(`CodeInterpreterTool`), and one that keeps the history itself with `store` off, its state kept in the container its
tool names (`http/containers.py`).
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from service import clean_env, running_service
from skips import tool_missing

pytestmark = pytest.mark.slow
TOKEN = "devui-" + uuid.uuid4().hex
TOOLS = Path(os.environ.get("LCI_TOOLS", Path.home() / ".cache" / "local-code-interpreter"))
DRIVER = Path(__file__).parent / "clients" / "agents_sdk.py"


def test_the_openai_agents_sdk_runs_its_agent_on_the_service(tmp_path):
    python = TOOLS / "aca-clients" / "openai-agents" / "bin" / "python"
    if not python.exists():
        tool_missing("the OpenAI Agents SDK is not installed", "aca-clients.sh")
    with running_service(clean_env(DEVUI_AUTH_TOKEN=TOKEN, LCI_SANDBOX="subprocess")) as (base, process, _):
        env = clean_env(HOME=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        done = subprocess.run([str(python), str(DRIVER), base, TOKEN], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert process.poll() is None
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, answer in report.items():
        assert "raised" not in answer, (name, answer)
    assert "42" in report["plain"]["output"]
    assert report["plain"]["items"] == [["tool_call_item", "code_interpreter_call"], ["message_output_item", "message"]]
    assert "56" in report["history"]["output"]
    assert "42" in report["chained"]["output"]  # x = 41 kept in the conversation's sandbox session
    assert "42" in report["conversation"]["output"]  # y = 6 kept in the named conversation's session
    assert "81" in report["streamed"]["output"]
    raw = report["streamed"]["raw"]  # the call's own events, parsed by the SDK, before the answer's (tool_stream.py)
    assert raw[1:8] == ["response.output_item.added", "response.code_interpreter_call.in_progress",
                        "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
                        "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed",
                        "response.output_item.done"]
    assert raw[8] == "response.output_item.added" and raw[-1] == "response.completed"
    assert report["streamed"]["items"] == ["tool_called", "message_output_created"]
    assert "56" in report["session"]["output"]  # its history kept by the Conversations API, items added in order
    assert report["session"]["items"] == ["message", "code_interpreter_call", "message"] * 2
    assert report["session"]["popped"] == "message"  # pop_item: conversations.items.delete on the lean path
    assert report["session"]["after"] == report["session"]["items"][:-1] and "72" in report["session"]["third"]
    assert "1024" in report["own_tools"]["output"]
    assert "42" in report["hosted"]["output"] and report["hosted"]["container"]  # CodeInterpreterTool, unchanged
    assert "42" in report["stateless"]["output"]  # z = 20 kept in the container its tool names, store off
