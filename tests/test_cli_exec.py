"""`python -m local_code_interpreter exec` and `doctor`, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from local_code_interpreter.sandbox import BACKENDS, TIMEOUT_EXIT_CODE

JSON_KEYS = {"stdout", "stderr", "exit_code", "timed_out", "truncated", "duration_ms", "sandbox", "value", "images", "files",
             "notice"}


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LCI_")}
    return subprocess.run([sys.executable, "-m", "local_code_interpreter", *args], input=stdin, text=True,
                          capture_output=True, env={**clean, **(env or {})}, timeout=180)


@pytest.fixture
def script(tmp_path):
    def write(code: str) -> str:
        path = tmp_path / "code.py"
        path.write_text(code)
        return str(path)
    return write


def test_output_and_exit_status_are_the_codes_own(script):
    done = cli("exec", script("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"))
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 3)


def test_timeout_exits_124():
    done = cli("exec", "--timeout", "1", "-", stdin="while True:\n    pass\n")
    assert done.returncode == TIMEOUT_EXIT_CODE and "timed out" in done.stderr


def test_json_object():
    done = cli("exec", "--json", "-", stdin="print(1)\nraise SystemExit(5)")
    result = json.loads(done.stdout)
    assert set(result) == JSON_KEYS and done.returncode == 5
    assert (result["stdout"], result["exit_code"], result["timed_out"], result["truncated"], result["sandbox"]) == (
        "1\n", 5, False, False, "subprocess")
    assert result["duration_ms"] > 0


def test_json_on_timeout():
    result = json.loads(cli("exec", "--json", "--timeout", "1", "-", stdin="import time\ntime.sleep(30)").stdout)
    assert (result["exit_code"], result["timed_out"]) == (TIMEOUT_EXIT_CODE, True)


def test_stdin_dash():
    done = cli("exec", "-", stdin="print(sum(range(10)))")
    assert (done.stdout, done.returncode) == ("45\n", 0)


def test_missing_file_is_a_one_line_error(tmp_path):
    done = cli("exec", str(tmp_path / "absent.py"))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "absent.py" in done.stderr
    assert "Traceback" not in done.stderr


def test_monty_sandbox():
    done = cli("exec", "--sandbox", "monty", "--json", "-", stdin="print(6 * 7)")
    result = json.loads(done.stdout)
    assert (result["stdout"], result["sandbox"], done.returncode) == ("42\n", "monty", 0)


def test_hyperlight_runs_or_says_why_not():
    done = cli("exec", "--sandbox", "hyperlight", "-", stdin="print(1)")
    assert "Traceback" not in done.stderr
    if done.returncode != 0:
        assert "hyperlight" in done.stderr.lower() and done.stderr.strip()
    else:
        assert done.stdout == "1\n"


@pytest.mark.parametrize("args, env, named", [
    (["--sandbox", "nope"], {}, "--sandbox"),
    (["--timeout", "abc"], {}, "--timeout"),
    ([], {"LCI_TIMEOUT_SECONDS": "abc"}, "LCI_TIMEOUT_SECONDS"),
    ([], {"LCI_SANDBOX": "nope"}, "LCI_SANDBOX"),
])
def test_bad_settings_exit_2_naming_the_setting(args, env, named):
    done = cli("exec", *args, "-", stdin="print(1)", env=env)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_doctor_lists_every_back_end():
    done = cli("doctor")
    assert done.returncode == 0
    for name in BACKENDS:
        assert f"\n{name}: " in done.stdout
    assert "[x] landlock" in done.stdout or "[ ] landlock" in done.stdout


def test_doctor_json():
    done = cli("doctor", "--json")
    report = json.loads(done.stdout)
    backends = {b["name"]: b for b in report["backends"]}
    assert set(backends) == set(BACKENDS) and done.returncode == 0
    for backend in backends.values():
        assert isinstance(backend["usable"], bool) and backend["detail"] and backend["layers"]
        assert all({"name", "active", "detail"} <= set(layer) for layer in backend["layers"])
    assert {"environment", "rlimits", "no_new_privs", "landlock"} <= {layer["name"] for layer in backends["subprocess"]["layers"]}


def test_control_sequences_are_escaped_on_a_terminal(script):
    """On a TTY, the code's window-title, clipboard and clear-screen sequences are shown, not obeyed."""
    import pty

    code = script("import sys\nprint('\\x1b]0;pwned\\x07title \\x1b]52;c;cHduZWQ=\\x07clip \\x1b[2J\\x1b[Hclear "
                  "\\x9b31mc1 ok')\nprint('\\x1b]2;err\\x07', file=sys.stderr)")
    controller, terminal = pty.openpty()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LCI_")}
        done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "exec", code], stdout=terminal,
                              stderr=terminal, env=clean, timeout=180)
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    text = shown.decode("utf-8", "replace")
    assert done.returncode == 0
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)
    assert "\\x1b]0;pwned\\x07title" in text and "\\x1b[2J" in text and "\\x9b31mc1 ok" in text
    assert "\\x1b]2;err\\x07" in text  # stderr too


def test_output_is_raw_when_not_a_terminal(script):
    done = cli("exec", script("print('\\x1b[1mbold\\x1b[0m')"))
    assert done.stdout == "\x1b[1mbold\x1b[0m\n"
