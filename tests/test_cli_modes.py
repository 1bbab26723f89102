"""The terminal modes, run as a user would: the default demo and the interactive chat on the embedded default."""

import subprocess
import sys

from service import ROOT, clean_env


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_code_interpreter", *args], input=stdin, env=clean_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_demo_runs_code_through_the_agent():
    done = run()
    assert done.returncode == 0, done.stderr
    assert "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29] 129" in done.stdout
    assert "embedded default" in done.stderr


def test_interactive_chat_keeps_going_until_exit():
    done = run("--interactive", stdin="print(2 + 2)\nwhat?\nprint('again')\nexit\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("agent>") == 3
    assert "4" in done.stdout and "again" in done.stdout and "no code" in done.stdout


def test_version_and_help():
    assert run("--version").stdout.strip()
    assert "exec FILE|-" in run("--help").stdout


def test_unknown_flag_is_a_usage_error():
    done = run("--frobnicate")
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr


def test_doctor_shows_the_session_limits_in_effect():
    done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "doctor"], capture_output=True, text=True,
                          env=clean_env(LCI_MAX_SESSIONS="7", LCI_SESSION_IDLE_SECONDS="90"), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sessions: at most 7 live, idle expiry 90 s" in done.stdout
