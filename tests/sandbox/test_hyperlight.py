"""The `hyperlight` back end: the real API where a micro-VM can start, a clear measured reason where it cannot."""

from __future__ import annotations

import asyncio
import sys

import pytest

from local_code_interpreter.sandbox import TIMEOUT_EXIT_CODE, Limits, create_sandbox
from local_code_interpreter.sandbox import hyperlight
from local_code_interpreter.sandbox.output import TRUNCATION_NOTE

LIMITS = Limits(timeout_seconds=20.0, max_output_bytes=1000)
REASON = hyperlight.probe()
needs_vm = pytest.mark.skipif(REASON is not None, reason=f"Hyperlight cannot run here: {REASON}")


def run(code: str, limits: Limits = LIMITS, language: str | None = None):
    async def once():
        backend = create_sandbox("hyperlight", limits)
        try:
            return await backend.run(code, language)
        finally:
            await backend.close()

    return asyncio.run(once())


def test_report_gives_the_measured_reason():
    rep = hyperlight.report(Limits())
    assert rep.name == "hyperlight"
    assert rep.usable is (REASON is None)
    assert rep.detail.startswith(hyperlight.implementation())
    if REASON is not None:
        assert REASON in rep.detail
    assert "python" in rep.languages
    assert {layer.name for layer in rep.layers} >= {"micro-VM", "worker process"}


def test_unusable_sandbox_returns_the_reason_as_an_error():
    if REASON is None:
        pytest.skip("Hyperlight runs here")
    result = run("print(1)")
    assert result.exit_code != 0 and not result.timed_out
    assert result.sandbox == "hyperlight"
    assert "hyperlight sandbox unavailable" in result.stderr
    assert REASON.splitlines()[0][:80] in result.stderr


def test_missing_javascript_backend_is_reported_clearly():
    if "javascript" in hyperlight.languages():
        pytest.skip("a JavaScript guest is installed")
    result = run("console.log(1)", language="javascript")
    assert result.exit_code != 0
    assert "HyperlightJS backend is not installed" in result.stderr


def test_unknown_language_is_refused():
    result = run("puts 1", language="ruby")
    assert result.exit_code == 1 and "not 'ruby'" in result.stderr


def _fake_worker(monkeypatch, source: str) -> None:
    monkeypatch.setattr(hyperlight, "_worker_argv", lambda: [sys.executable, "-c", source])


def test_a_hung_native_call_is_killed_at_the_timeout(monkeypatch):
    _fake_worker(monkeypatch, "import os, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(60)")
    result = run("print(1)", Limits(timeout_seconds=0.5))
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out
    assert "timed out after 0.5 s" in result.stderr


def test_worker_output_is_capped(monkeypatch):
    _fake_worker(monkeypatch, "import sys\nsys.stdout.write('x' * 10**6)\nsys.stderr.buffer.write(b'\\xff' * 5)")
    result = run("print(1)")
    assert result.truncated and result.exit_code == 0
    assert result.stdout == "x" * 1000 + TRUNCATION_NOTE.format(limit=1000)
    assert result.stderr == "\ufffd" * 5


def test_worker_gets_no_server_environment(monkeypatch):
    monkeypatch.setenv("SERVER_SECRET", "hunter2")
    _fake_worker(monkeypatch, "import os\nprint(sorted(os.environ))")
    assert "SERVER_SECRET" not in run("print(1)").stdout


def test_probe_that_hangs_is_bounded(monkeypatch):
    _fake_worker(monkeypatch, "import time\ntime.sleep(60)")
    monkeypatch.setattr(hyperlight, "PROBE_TIMEOUT_SECONDS", 0.5)
    hyperlight.probe.cache_clear()
    try:
        assert hyperlight.probe() == "print(1) did not finish within 0.5 s"
    finally:
        hyperlight.probe.cache_clear()


@needs_vm
def test_print_runs_in_the_micro_vm():
    result = run("print(1)")
    assert (result.stdout, result.exit_code) == ("1\n", 0)


@needs_vm
def test_exception_in_the_guest():
    result = run("raise ValueError('boom')")
    assert result.exit_code != 0 and "ValueError" in result.stderr


@needs_vm
def test_infinite_loop_in_the_guest_times_out():
    result = run("while True:\n    pass", Limits(timeout_seconds=3.0))
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out


@needs_vm
def test_guest_cannot_read_host_files():
    result = run("print(open('/etc/hostname').read())")
    assert result.exit_code != 0


# -- sessions -------------------------------------------------------------------------------------------------

# A stand-in worker speaking the session protocol (hyperlight_worker.py --session) with plain `exec` in one
# namespace, so the session plumbing (state kept in one worker, timeout and crash handling, clean-up) is tested
# here even where no micro-VM can start. The real guest is tested below where one can.
FAKE_SESSION_WORKER = r"""
import contextlib, io, json, os, sys
config = json.loads(sys.stdin.readline())
print(json.dumps({"ready": True}), flush=True)
scope = {}
for line in sys.stdin:
    code = json.loads(line)["code"]
    if code == "crash":
        os._exit(3)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, scope)
    print(json.dumps({"stdout": out.getvalue(), "stderr": "", "exit_code": 0}), flush=True)
"""


def in_session(*codes, limits=LIMITS, language=None):
    async def go():
        backend = create_sandbox("hyperlight", limits)
        session = await backend.open_session(language)
        try:
            return [await session.run(code) for code in codes], session
        finally:
            await session.close()
            await backend.close()

    return asyncio.run(go())


def test_without_a_micro_vm_open_session_gives_the_librarys_reason():
    if REASON is not None:
        from local_code_interpreter.sandbox import SandboxUnavailable

        with pytest.raises(SandboxUnavailable, match="keeps no sessions here") as caught:
            in_session("x = 1")
        assert REASON.splitlines()[0][:80] in str(caught.value)
    sessions = next(layer for layer in hyperlight.report(Limits()).layers if layer.name == "sessions")
    assert sessions.active is (hyperlight.session_support() is None)
    if not sessions.active:
        assert hyperlight.session_support() in sessions.detail


def _fake_session_worker(monkeypatch) -> None:
    _fake_worker(monkeypatch, FAKE_SESSION_WORKER)
    monkeypatch.setattr(hyperlight, "session_support", lambda: None)


def test_session_keeps_one_worker_between_executions(monkeypatch):
    _fake_session_worker(monkeypatch)
    results, session = in_session("x = 41", "print(x + 1)", "import os\nprint(os.getpid())",
                                  "print(os.getpid())")
    assert results[1].stdout == "42\n" and results[2].stdout == results[3].stdout
    assert not session.alive  # closed by in_session


def test_session_timeout_kills_the_worker_and_says_the_state_was_lost(monkeypatch):
    _fake_session_worker(monkeypatch)
    results, _ = in_session("x = 1", "while True:\n    pass", "print(x)", limits=Limits(timeout_seconds=0.5))
    assert results[1].timed_out and results[1].exit_code == TIMEOUT_EXIT_CODE and "lost" in results[1].notice
    assert results[2].exit_code == 1 and "ended" in results[2].stderr


def test_session_crash_ends_it_with_a_notice(monkeypatch):
    _fake_session_worker(monkeypatch)
    results, _ = in_session("crash")
    assert results[0].exit_code == 1 and "crashed" in results[0].notice


def test_session_that_cannot_start_raises_the_workers_reason(monkeypatch):
    from local_code_interpreter.sandbox import SandboxUnavailable

    _fake_worker(monkeypatch, "import json, sys\nsys.stdin.readline()\n"
                              "print(json.dumps({'error': 'hyperlight sandbox unavailable: no KVM today'}))")
    monkeypatch.setattr(hyperlight, "session_support", lambda: None)
    with pytest.raises(SandboxUnavailable, match="^no KVM today$"):
        in_session("x = 1")


@needs_vm
def test_session_keeps_guest_state_in_the_micro_vm():
    results, _ = in_session("x = 41", "print(x + 1)")
    assert results[1].stdout == "42\n"
