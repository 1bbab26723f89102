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
