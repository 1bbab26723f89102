"""The `execute_code` tool keeps one session per conversation, through the real agent, the embedded default client
and a real back end (monty; subprocess too where it keeps sessions)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys

import pytest
from agent_framework import Content

from local_code_interpreter.agent import INSTRUCTIONS, build_agent
from local_code_interpreter.conversation import in_conversation
from local_code_interpreter.identity import Caller
from local_code_interpreter.offline import EmbeddedChatClient
from local_code_interpreter.sandbox import ExecutionResult, FileInfo, Image, Limits, create_sandbox
from local_code_interpreter.sessions import SessionLimits, SessionManager
from local_code_interpreter.tool import format_result, tool_output
from service import ROOT, clean_env
from test_sessions import need_sessions

LIMITS = Limits(timeout_seconds=5.0)


def with_agent(backend: str, turns, manager: bool = True):
    """Run `turns(agent)` against a real agent on the embedded default client and the named back end."""
    async def go():
        sandbox = create_sandbox(backend, LIMITS)
        sessions = SessionManager(sandbox, SessionLimits(), language="python") if manager else None
        agent = build_agent(EmbeddedChatClient(), sandbox, sessions)
        try:
            return await turns(agent)
        finally:
            if sessions is not None:
                await sessions.close_all()
            await sandbox.close()

    return asyncio.run(go())


async def say(agent, text: str) -> str:
    return (await agent.run(text)).text


@pytest.mark.parametrize("backend", ["monty", "subprocess"])
def test_two_turns_of_one_conversation_share_state_and_two_conversations_do_not(backend):
    need_sessions(backend)

    async def turns(agent):
        with in_conversation("conv-1"):
            first = await say(agent, "x = 41")
            second = await say(agent, "print(x + 1)")
        with in_conversation("conv-2"):
            other = await say(agent, "print(x + 1)")
        with in_conversation("conv-1"):
            back = await say(agent, "x")
        return first, second, other, back

    first, second, other, back = with_agent(backend, turns)
    assert "exit code 0" in first
    assert "stdout:\n42\n" in second
    assert "NameError" in other and "42" not in other
    assert "value:\n41" in back


def test_the_same_conversation_id_of_two_callers_is_two_sessions():
    async def turns(agent):
        with in_conversation("shared-id", Caller("entra:t/alice", "entra")):
            await say(agent, "secret = 'alice'")
        with in_conversation("shared-id", Caller("entra:t/bob", "entra")):
            return await say(agent, "print(secret)")

    assert "NameError" in with_agent("monty", turns)


def test_outside_a_conversation_every_call_is_one_shot():
    async def turns(agent):
        await say(agent, "x = 41")
        return await say(agent, "print(x + 1)")

    assert "NameError" in with_agent("monty", turns)


def test_without_a_session_manager_the_tool_stays_one_shot():
    async def turns(agent):
        with in_conversation("c"):
            await say(agent, "x = 41")
            return await say(agent, "print(x + 1)")

    assert "NameError" in with_agent("monty", turns, manager=False)


def test_a_back_end_without_sessions_runs_once_and_says_so():
    class OneShotOnly:
        """The real monty back end's one-shot path, with no `open_session` (as hyperlight where it cannot)."""

        def __init__(self, real):
            self.real, self.name = real, real.name

        async def run(self, code, language=None):
            return await self.real.run(code, language)

        async def close(self):
            await self.real.close()

    async def go():
        from local_code_interpreter.sandbox.bounded import Bounded
        real = create_sandbox("monty", LIMITS)
        sandbox = Bounded(OneShotOnly(real), 2)
        sessions = SessionManager(sandbox, SessionLimits(), language="python")
        agent = build_agent(EmbeddedChatClient(), sandbox, sessions)
        try:
            with in_conversation("c"):
                return await say(agent, "print(6 * 7)")
        finally:
            await sandbox.close()

    reply = asyncio.run(go())
    assert "stdout:\n42" in reply and "cannot keep state between executions" in reply


def test_a_fresh_session_notice_reaches_the_model():
    async def go():
        sandbox = create_sandbox("monty", Limits(timeout_seconds=0.3))
        sessions = SessionManager(sandbox, SessionLimits(), language="python")
        agent = build_agent(EmbeddedChatClient(), sandbox, sessions)
        try:
            with in_conversation("c"):
                died = await say(agent, "x = 1\ny = 10 ** (10 ** 8)")
                fresh = await say(agent, "print(2)")
            return died, fresh
        finally:
            await sessions.close_all()
            await sandbox.close()

    died, fresh = asyncio.run(go())
    assert died.startswith("note: ") and "state" in died and "lost" in died
    assert fresh.startswith("note: ") and "fresh session was started" in fresh and "stdout:\n2" in fresh


def test_format_result_shows_value_images_files_and_notice():
    result = ExecutionResult(stdout="hi\n", stderr="", exit_code=0, duration_ms=3, sandbox="subprocess",
                             value="42", images=[Image("image/png", b"\x89PNG" + b"\0" * 2044)],
                             files=[FileInfo("out/chart.csv", 1536, 0.0, "text/csv")],
                             notice="A fresh session was started.")
    text = format_result(result)
    assert text.splitlines()[0] == "note: A fresh session was started."
    assert "stdout:\nhi" in text and "value:\n42" in text
    assert "images: 1 captured and attached: image 1 (image/png, 2.0 KB)" in text
    assert "files created or changed: out/chart.csv (1.5 KB, text/csv)" in text
    assert text.endswith("[exit code 0; 3 ms in the subprocess sandbox]")


def test_images_are_returned_as_data_content_beside_the_text():
    png = b"\x89PNG\r\n\x1a\n" + b"\1" * 32
    with_images = tool_output(ExecutionResult("", "", 0, images=[Image("image/png", png)]))
    assert isinstance(with_images, list) and [c.type for c in with_images] == ["text", "data"]
    assert with_images[1].media_type == "image/png"
    assert with_images[1].uri == "data:image/png;base64," + base64.b64encode(png).decode()
    assert tool_output(ExecutionResult("x\n", "", 0)) == format_result(ExecutionResult("x\n", "", 0))
    # The framework keeps them as the function result's items; the flat `result` stays the text.
    result = Content.from_function_result("call_1", result=with_images)
    assert [c.type for c in result.items] == ["text", "data"] and result.result == with_images[0].text


def test_instructions_say_state_persists_and_images_are_automatic():
    assert "persist" in INSTRUCTIONS and "captured" in INSTRUCTIONS and "fresh session" in INSTRUCTIONS


def test_terminal_chat_is_one_conversation_for_the_whole_run():
    done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "--interactive", "--sandbox", "monty"],
                          input="x = 41\nprint(x + 1)\nexit\n", env=clean_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("agent>") == 2 and "stdout:\n42\n" in done.stdout


def test_the_embedded_default_replies_with_the_text_and_leaves_the_images_to_show_artifacts():
    from agent_framework import Message

    from local_code_interpreter.offline import _reply

    png = Content.from_data(b"\x89PNG\r\n\x1a\n", "image/png")
    tool_turn = Message(role="tool", contents=[Content.from_function_result("call_1", result=[
        Content.from_text("stdout:\nplotted"), png])])
    reply = _reply([tool_turn])
    # artifacts.ShowArtifacts shows the images once, for every client (tests/test_devui_attachments.py): not twice.
    assert [c.type for c in reply] == ["text"]
    assert reply[0].text.startswith("stdout:\nplotted")


def test_a_chart_and_a_file_come_back_from_the_subprocess_session():
    need_sessions("subprocess")

    async def go():
        sandbox = create_sandbox("subprocess", Limits(timeout_seconds=30.0))
        sessions = SessionManager(sandbox, SessionLimits(), language="python")
        agent = build_agent(EmbeddedChatClient(), sandbox, sessions)
        try:
            with in_conversation("chart"):
                await say(agent, "rows = [(1, 1), (2, 4), (3, 9)]")
                response = await agent.run("import matplotlib.pyplot as plt\n"
                                           "plt.plot([r[0] for r in rows], [r[1] for r in rows])\n"
                                           "open('squares.csv', 'w').write('\\n'.join(f'{a},{b}' for a, b in rows))\n"
                                           "len(rows)")
            tool_results = [c for m in response.messages for c in m.contents if c.type == "function_result"]
            return response, tool_results
        finally:
            await sessions.close_all()
            await sandbox.close()

    response, tool_results = asyncio.run(go())
    text = response.text
    assert "value:\n3" in text and "images: 1 captured and attached: image 1 (image/png" in text
    assert "files created or changed: squares.csv (" in text
    items = tool_results[0].items
    assert [c.type for c in items] == ["text", "data"] and items[1].media_type == "image/png"
    assert base64.b64decode(items[1].uri.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    # The embedded default's own reply is text: artifacts.ShowArtifacts shows the image (tests/test_devui_attachments.py).
    assert not [c for c in response.messages[-1].contents if c.type == "data"]


def test_a_full_replica_aborts_the_tool_call_with_sandbox_busy():
    """The tool lets SandboxBusy through (the HTTP layer answers 429), rather than handing the model a text."""
    from local_code_interpreter.sandbox import SandboxBusy
    from local_code_interpreter.tool import make_execute_code

    async def go():
        sandbox = create_sandbox("monty", Limits(timeout_seconds=1.0))
        sessions = SessionManager(sandbox, SessionLimits(max_sessions=1), language="python")
        execute_code = make_execute_code(sandbox, sessions)
        try:
            with in_conversation("long"):
                long = asyncio.create_task(execute_code.invoke(arguments={"code": "while True:\n    pass"}))
            await asyncio.sleep(0.2)
            with in_conversation("other"):
                with pytest.raises(SandboxBusy, match="busy; retry"):
                    await execute_code.invoke(arguments={"code": "print(1)"})
            await long
        finally:
            await sessions.close_all()
            await sandbox.close()

    asyncio.run(go())
