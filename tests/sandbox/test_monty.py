"""The `monty` back end against real pydantic-monty workers: output, errors, limits, no OS access."""

from __future__ import annotations

import asyncio

import pytest

from local_code_interpreter.sandbox import TIMEOUT_EXIT_CODE, Limits, create_sandbox
from local_code_interpreter.sandbox.monty import report
from local_code_interpreter.sandbox.output import TRUNCATION_NOTE

SMALL = Limits(timeout_seconds=1.0, memory_mb=64, max_output_bytes=1000)


def run(code: str, limits: Limits = SMALL, language: str | None = None):
    async def once():
        backend = create_sandbox("monty", limits)
        try:
            return await backend.run(code, language)
        finally:
            await backend.close()

    return asyncio.run(once())


def test_print_goes_to_stdout():
    result = run("print(1)\nprint('a', 'b', sep='-')")
    assert (result.stdout, result.stderr, result.exit_code) == ("1\na-b\n", "", 0)
    assert result.sandbox == "monty" and not result.timed_out and not result.truncated
    assert result.duration_ms > 0


def test_print_to_stderr():
    result = run("import sys\nprint('oops', file=sys.stderr)")
    assert (result.stdout, result.stderr, result.exit_code) == ("", "oops\n", 0)


def test_exception_exits_1_with_traceback():
    result = run("print('before')\n1 / 0")
    assert result.exit_code == 1 and not result.timed_out
    assert result.stdout == "before\n"
    assert "Traceback" in result.stderr and "ZeroDivisionError: division by zero" in result.stderr


def test_syntax_error_shows_only_the_callers_code():
    for code in ("def f(:\n    pass", "print(1,", "x = 1 + \\", "if True:"):
        result = run(code)
        assert result.exit_code == 1, code
        assert "SyntaxError" in result.stderr, code
        assert "pass\n    None" not in result.stderr and "\n    None" not in result.stderr, code


def test_unfinished_code_is_not_completed_by_the_value_guard():
    assert run("print(1,").stdout == ""


def test_trailing_expression_value_is_not_echoed():
    result = run("x = 2\nx * 21", Limits(timeout_seconds=5.0))
    assert (result.stdout, result.exit_code) == ("", 0)
    assert run("list(range(10**6))", Limits(timeout_seconds=10.0)).exit_code == 0


def test_infinite_loop_times_out():
    result = run("while True:\n    pass")
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out
    assert "TimeoutError" in result.stderr


def test_timeout_cannot_be_caught_by_the_code():
    result = run("while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass")
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out


def test_sleep_past_the_timeout():
    result = run("import time\ntime.sleep(30)\nprint('woke')")
    assert result.exit_code == TIMEOUT_EXIT_CODE and result.timed_out
    assert result.stdout == ""


def test_a_raised_timeout_error_is_an_ordinary_exception():
    result = run("raise TimeoutError('mine')")
    assert result.exit_code == 1 and not result.timed_out
    assert "TimeoutError: mine" in result.stderr


@pytest.mark.parametrize(
    "code",
    ["x = [0] * (10**9)", "a = []\nwhile True:\n    a.append('x' * 100000)", "s = 'x' * (2**31)"],
)
def test_memory_bomb_is_a_memory_error(code):
    result = run(code)
    assert result.exit_code == 1 and not result.timed_out
    assert "MemoryError" in result.stderr


def test_recursion_bomb():
    result = run("def f():\n    return f()\nf()")
    assert result.exit_code == 1 and "RecursionError" in result.stderr


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("open('/etc/passwd').read()", "PermissionError"),
        ("open('/tmp/escape.txt', 'w').write('x')", "PermissionError"),
        ("from pathlib import Path\nPath('/etc/hostname').read_text()", "PermissionError"),
        ("import os\nprint(os.environ)", "not supported"),
        ("import os\nprint(os.getenv('HOME'))", "not supported"),
        ("import os\nos.system('id')", "Error"),
        ("import subprocess", "ModuleNotFoundError"),
        ("import socket", "ModuleNotFoundError"),
        ("import ctypes", "ModuleNotFoundError"),
        ("__import__('os').fork()", "Error"),
    ],
)
def test_no_os_access(code, error):
    result = run(code)
    assert result.exit_code == 1, result
    assert error in result.stderr


def test_stdout_is_capped_with_a_note():
    result = run("print('x' * 5000)")
    assert result.truncated and result.exit_code == 0
    assert result.stdout == "x" * 1000 + TRUNCATION_NOTE.format(limit=1000)


def test_stderr_is_capped_too():
    result = run("import sys\nprint('e' * 5000, file=sys.stderr)")
    assert result.truncated
    assert result.stderr.endswith(TRUNCATION_NOTE.format(limit=1000))
    assert len(result.stderr.encode()) <= 1000 + len(TRUNCATION_NOTE.format(limit=1000))


def test_cap_counts_bytes_and_never_splits_a_character():
    result = run("print('é' * 5000)")
    assert result.stdout == "é" * 500 + TRUNCATION_NOTE.format(limit=1000)


def test_output_flood_is_capped_and_stopped():
    result = run("while True:\n    print('y' * 1000)")
    assert result.timed_out and result.truncated
    assert len(result.stdout) == 1000 + len(TRUNCATION_NOTE.format(limit=1000))


def test_each_execution_is_fresh_and_concurrent_runs_stay_apart():
    async def scenario():
        backend = create_sandbox("monty", SMALL)
        try:
            first = await backend.run("secret = 42\nprint(secret)")
            second = await backend.run("print(secret)")
            many = await asyncio.gather(*(backend.run(f"print({i} * 2)") for i in range(8)))
            after_crash = await backend.run("while True: pass")
            healthy = await backend.run("print('ok')")
            return first, second, many, after_crash, healthy
        finally:
            await backend.close()

    first, second, many, after_crash, healthy = asyncio.run(scenario())
    assert first.stdout == "42\n"
    assert second.exit_code == 1 and "NameError" in second.stderr
    assert [r.stdout for r in many] == [f"{i * 2}\n" for i in range(8)]
    assert after_crash.timed_out
    assert (healthy.stdout, healthy.exit_code) == ("ok\n", 0)


def test_javascript_is_refused_clearly():
    result = run("console.log(1)", language="javascript")
    assert result.exit_code == 1 and "Python only" in result.stderr


def test_default_language_is_used_when_none_given():
    async def once():
        backend = create_sandbox("monty", SMALL, language="javascript")
        try:
            return await backend.run("print(1)")
        finally:
            await backend.close()

    assert "Python only" in asyncio.run(once()).stderr


def test_report_is_measured_and_usable_here():
    rep = report(Limits())
    assert rep.name == "monty" and rep.usable, rep.detail
    assert rep.languages == ("python",)
    assert {layer.name for layer in rep.layers} >= {"no OS access", "resource limits"}
    assert all(layer.active for layer in rep.layers)


def test_start_warms_the_pool_before_the_first_run():
    async def scenario():
        backend = create_sandbox("monty", SMALL)
        try:
            await backend.start()
            return await backend.run("print('warm')")
        finally:
            await backend.close()

    assert asyncio.run(scenario()).stdout == "warm\n"


# -- sessions: state kept between executions as Monty's own dump() ------------------------------------------


def in_session(*codes: str, limits: Limits = SMALL):
    """Run each snippet in turn in one real monty session; returns (results, the session)."""
    async def go():
        backend = create_sandbox("monty", limits)
        try:
            session = await backend.open_session()
            results = [await session.run(code) for code in codes]
            return results, session
        finally:
            await backend.close()

    return asyncio.run(go())


def test_session_keeps_variables_functions_and_imports():
    results, session = in_session("x = 41", "print(x + 1)", "import math\ndef double(a):\n    return a * 2",
                                  "print(double(x), math.floor(2.5))")
    assert [r.exit_code for r in results] == [0, 0, 0, 0]
    assert results[1].stdout == "42\n" and results[3].stdout == "82 2\n"
    assert session.alive and all(r.notice == "" for r in results)


def test_session_shows_the_last_expression_like_a_repl_and_binds_underscore():
    results, _ = in_session("x = 6\nx * 7", "_ + 1", "y = [1, 'a']; y", "x = 1", "None", "print('p')",
                            "'é' * 3")
    assert [r.value for r in results] == ["42", "43", "[1, 'a']", None, None, None, "'ééé'"]
    assert results[0].stdout == "" and results[5].stdout == "p\n"


def test_session_value_text_is_capped():
    results, _ = in_session("'a' * 5000")
    assert len(results[0].value) == SMALL.max_output_bytes


def test_session_error_keeps_earlier_state_and_shows_the_callers_line():
    results, session = in_session("x = 1", "x = 2\n1 / 0", "x")
    assert results[1].exit_code == 1 and "ZeroDivisionError" in results[1].stderr
    assert "_ = (" not in results[1].stderr and "\n    1 / 0\n" in results[1].stderr
    assert results[2].value == "2" and session.alive  # like a REPL: what ran before the error stays


def test_session_syntax_error_changes_nothing():
    results, _ = in_session("x = 1", "x = 2\ndef f(:", "x")
    assert results[1].exit_code == 1 and "SyntaxError" in results[1].stderr
    assert results[2].value == "1"


def test_session_timeout_interrupts_the_cell_and_the_session_survives():
    results, session = in_session("x = 5", "while True:\n    x += 1", "x > 5")
    assert results[1].timed_out and results[1].exit_code == TIMEOUT_EXIT_CODE
    assert results[2].value == "True" and session.alive and results[1].notice == ""


def test_session_ends_when_the_worker_dies_and_says_so():
    # One huge big-integer operation never reaches Monty's own time check; the pool kills the worker past the
    # grace period (MontyCrashedError), which loses the interpreter.
    results, session = in_session("x = 1", "y = 10 ** (10 ** 8)", "x", limits=Limits(timeout_seconds=0.3))
    assert results[1].timed_out and "state" in results[1].notice and "lost" in results[1].notice
    assert not session.alive
    assert results[2].exit_code == 1 and "ended" in results[2].stderr


def test_two_sessions_do_not_share_state():
    async def go():
        backend = create_sandbox("monty", SMALL)
        try:
            one, two = await backend.open_session(), await backend.open_session()
            await one.run("secret = 'one'")
            await two.run("secret = 'two'")
            return (await one.run("secret")).value, (await two.run("secret")).value, (await backend.run("secret"))
        finally:
            await backend.close()

    first, second, oneshot = asyncio.run(go())
    assert (first, second) == ("'one'", "'two'")
    assert oneshot.exit_code == 1 and "NameError" in oneshot.stderr  # one-shot runs stay fresh


def test_session_has_no_files_and_says_why():
    from local_code_interpreter.sandbox import SandboxUnavailable

    async def go():
        backend = create_sandbox("monty", SMALL)
        try:
            session = await backend.open_session()
            assert await session.files() == []
            with pytest.raises(SandboxUnavailable, match="no file system"):
                await session.upload("a.csv", b"1,2\n")
            with pytest.raises(FileNotFoundError):
                await session.read("a.csv")
            with pytest.raises(SandboxUnavailable, match="Python only"):
                await backend.open_session("javascript")
            await session.close()
            assert not session.alive and session.state_bytes == 0
        finally:
            await backend.close()

    asyncio.run(go())


def test_idle_session_holds_no_worker_only_its_state():
    async def go():
        backend = create_sandbox("monty", SMALL)
        try:
            sessions = [await backend.open_session() for _ in range(3 * 8)]  # more than the pool's workers
            for n, session in enumerate(sessions):
                await session.run(f"n = {n}")
            values = [(await session.run("n")).value for session in sessions]
            return values, [session.state_bytes for session in sessions]
        finally:
            await backend.close()

    values, sizes = asyncio.run(go())
    assert values == [str(n) for n in range(24)]
    assert all(0 < size < 64 * 1024 for size in sizes)
