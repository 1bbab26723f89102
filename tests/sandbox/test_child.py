"""The confined child's REPL (`sandbox/child.py`), driven the way the supervisor drives it.

Each test talks to a real `python -m local_code_interpreter.sandbox.child CELLS RESULTS` process over real
pipes: cells in on one, framed results out on another, stdout and stderr on their own pipes, drained with
one selector loop and, once a result frame has arrived, read without blocking until empty (so a test fails
if the child wrote its result before all of the cell's output was in the pipes). The child runs `prepare()`
first, as the warm template does, so numpy, pandas and matplotlib are the warm ones.
"""

from __future__ import annotations

import base64
import io
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

HEADER = struct.Struct("!I")
# The template starts with an (almost) empty environment: no PYTHONUNBUFFERED from the test runner hiding
# buffering bugs, no HOME for matplotlib to fall back on.
TEMPLATE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
DEADLINE = 60  # seconds for one cell; far beyond what any of these needs, so a hang fails instead of blocking


class Child:
    """One REPL child with its four pipes, in its own working directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        cells_r, self.cells_w = os.pipe()
        self.results_r, results_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_code_interpreter.sandbox.child", str(cells_r), str(results_w)],
            pass_fds=(cells_r, results_w), cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=TEMPLATE_ENV)
        os.close(cells_r)
        os.close(results_w)
        for fd in (self.results_r, self.process.stdout.fileno(), self.process.stderr.fileno()):
            os.set_blocking(fd, False)

    def send(self, code: str) -> None:
        body = json.dumps({"code": code}).encode()
        os.write(self.cells_w, HEADER.pack(len(body)) + body)

    def result(self, on_output=None) -> tuple[dict, str, str]:
        """Read until the result frame; then drain stdout/stderr without waiting. (frame, stdout, stderr)."""
        out, err, frame = bytearray(), bytearray(), bytearray()
        streams = {self.process.stdout.fileno(): out, self.process.stderr.fileno(): err, self.results_r: frame}
        selector = selectors.DefaultSelector()
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + DEADLINE
        try:
            while not _complete(frame):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no result within {DEADLINE} s; stdout {bytes(out)!r} stderr {bytes(err)!r}")
                for key, _ in selector.select(1.0):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        if key.fd == self.results_r:
                            raise AssertionError(f"the child closed its results pipe; exit {self.process.poll()}; "
                                                 f"stderr {bytes(err)!r}")
                        selector.unregister(key.fd)
                        continue
                    streams[key.fd].extend(chunk)
                    if on_output is not None and key.fd != self.results_r:
                        on_output(bytes(out))
        finally:
            selector.close()
        for fd, buffer in streams.items():  # what the supervisor does when the frame arrives: no waiting
            if fd != self.results_r:
                buffer.extend(_read_available(fd))
        (size,) = HEADER.unpack_from(frame)
        assert len(frame) == HEADER.size + size, "bytes after the result frame"
        return json.loads(frame[HEADER.size:]), out.decode(), err.decode()

    def run(self, code: str) -> tuple[dict, str, str]:
        self.send(code)
        return self.result()

    def close(self) -> int:
        os.close(self.cells_w)
        try:
            return self.process.wait(timeout=DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.results_r)
            self.process.stdout.close()
            self.process.stderr.close()


def _complete(frame: bytearray) -> bool:
    return len(frame) >= HEADER.size and len(frame) >= HEADER.size + HEADER.unpack_from(frame)[0]


def _read_available(fd: int) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data.extend(chunk)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """One session shared by this module's tests (each uses its own names), as a conversation would."""
    repl = Child(tmp_path_factory.mktemp("session"))
    yield repl
    assert repl.close() == 0


@pytest.fixture
def fresh(tmp_path):
    repl = Child(tmp_path)
    yield repl
    if repl.process.poll() is None:
        repl.close()


# State and values -----------------------------------------------------------------------------------------
def test_state_persists_across_cells(child):
    assert child.run("counter = 41")[0]["value"] is None
    assert child.run("counter += 1")[0]["exit_code"] == 0
    child.run("import statistics\ndef double(n):\n    return 2 * n")
    frame, out, err = child.run("print(double(counter)); statistics.mean([counter, 0])")
    assert (frame["exit_code"], frame["value"], out, err) == (0, "21", "84\n", "")


def test_last_bare_expression_is_returned_not_printed(child):
    frame, out, _ = child.run("word = 'sandbox'\nword.upper()")
    assert frame["value"] == "'SANDBOX'" and out == ""
    assert child.run("None")[0]["value"] is None  # as a REPL shows nothing for None
    assert child.run("word;")[0]["value"] is None  # a trailing semicolon hides it, as in a notebook
    assert child.run("print('shown')")[0]["value"] is None  # print returns None: its output is on stdout
    assert child.run("for i in range(3):\n    i")[0]["value"] is None  # not a bare last statement


def test_huge_value_is_capped(child):
    from local_code_interpreter.sandbox.child import VALUE_LIMIT

    value = child.run("'x' * 1_000_000")[0]["value"]
    assert value.startswith("'xxx") and len(value) < VALUE_LIMIT + 100 and "more characters" in value


def test_huge_containers_are_shortened_before_their_repr_is_built(child):
    value = child.run("list(range(10**6))")[0]["value"]
    assert value.startswith("[0, 1, 2,") and value.endswith("999, ...]  [1000000 items]")
    value = child.run("b'\\0' * 10**7")[0]["value"]
    assert value.startswith("b'\\x00") and value.endswith(f"[{10**7 - 20000} more bytes]")


def test_old_cell_sources_are_forgotten_past_a_total(monkeypatch):
    import linecache

    from local_code_interpreter.sandbox import child as module

    monkeypatch.setattr(module, "SOURCE_LIMIT", 1000)
    monkeypatch.setattr(module, "_sources", {})
    for index in range(10):
        module._remember_source(f"<test cell {index}>", "x = 1\n" * 50)  # 300 characters each
    kept = [name for name in linecache.cache if name.startswith("<test cell")]
    assert kept == ["<test cell 7>", "<test cell 8>", "<test cell 9>"]
    assert linecache.getline("<test cell 9>", 2) == "x = 1\n"
    for name in kept:
        linecache.cache.pop(name)


def test_a_file_landing_during_the_warm_up_does_not_end_the_child(tmp_path, monkeypatch):
    """A session may be handed out before its child has warmed up, and its first upload may land while the warm-up
    cell runs (CI saw it: the child exited with status 1 and the session had ended before its first cell)."""
    from local_code_interpreter.sandbox import child as module

    execute = module._execute

    def upload_meanwhile(code, namespace, filename):
        (tmp_path / "upload0.bin").write_bytes(b"from the user")  # as files.write does, from the server
        return execute(code, namespace, filename)

    monkeypatch.setattr(module, "_execute", upload_meanwhile)
    monkeypatch.setattr(module, "_workdir", str(tmp_path))
    assert module._warm_up()


def test_the_templates_rehearsal_leaves_nothing_behind(tmp_path, monkeypatch):
    """The template runs the warm-up cell before any fork (`_rehearse`): it must leave no directory, no cell source,
    no pending set-up files and the session directory setting as it was, and run nothing but the warm-up cell."""
    from local_code_interpreter.sandbox import child as module

    ran = []
    execute = module._execute
    monkeypatch.setattr(module, "_execute", lambda code, *rest: ran.append(code) or execute(code, *rest))
    monkeypatch.setattr(module.tempfile, "tempdir", str(tmp_path))
    before = module._workdir
    module._rehearse()
    assert ran == [module.WARM_UP_CELL] * module.REHEARSALS
    assert list(tmp_path.iterdir()) == [] and module._workdir == before and not module._quiet
    assert not [name for name in module.linecache.cache if "warm-up" in name]
    assert "<warm-up>" not in module._sources


def test_main_namespace_is_a_real_module(child):
    """Pickle and dataclasses look classes up in sys.modules['__main__']: cells' definitions must be there."""
    code = ("import dataclasses, pickle, sys\n@dataclasses.dataclass\nclass Point:\n    x: 'int'\n"
            "(__name__, pickle.loads(pickle.dumps(Point(3))), sys.modules['__main__'].Point is Point)")
    assert child.run(code)[0]["value"] == "('__main__', Point(x=3), True)"


def test_top_level_await(child):
    frame, _, _ = child.run("import asyncio\nasync def later(v):\n    await asyncio.sleep(0)\n    return v\n"
                            "await later(7)")
    assert (frame["exit_code"], frame["value"]) == (0, "7")


def test_pandas_and_numpy_are_warm(child):
    pytest.importorskip("pandas")
    code = ("import sys, time\nstarted = time.perf_counter()\nimport pandas as pd, numpy as np\n"
            "elapsed = time.perf_counter() - started\n"
            "frame = pd.DataFrame({'a': np.arange(3)})\n(int(frame.a.sum()), elapsed < 0.05)")
    assert child.run(code)[0]["value"] == "(3, True)"


# Errors, exits, interrupts ----------------------------------------------------------------------------------
def test_exception_traceback_shows_the_code_not_ours(child):
    child.run("def explode():\n    raise ValueError('boom')")
    frame, out, err = child.run("print('before')\nexplode()")
    assert frame["exit_code"] == 1 and frame["error"] == "ValueError: boom" and frame["value"] is None
    assert out == "before\n"
    assert err.startswith("Traceback (most recent call last):\n")
    assert 'line 2, in <module>\n    explode()' in err and "raise ValueError('boom')" in err  # its source lines
    assert "child.py" not in err and "local_code_interpreter" not in err
    assert err.rstrip().endswith("ValueError: boom")
    assert child.run("1 + 1")[0]["value"] == "2"  # the session survives


def test_syntax_error(child):
    frame, _, err = child.run("def broken(:\n    pass")
    assert frame["exit_code"] == 1 and frame["error"].startswith("SyntaxError: ")
    assert "Traceback" not in err and "SyntaxError" in err and "def broken(:" in err


def test_notebook_lines_get_a_plain_explanation(child):
    frame, _, _ = child.run("%matplotlib inline\nimport matplotlib.pyplot as plt\n'ignored, figures come anyway'")
    assert (frame["exit_code"], frame["value"]) == (0, "'ignored, figures come anyway'")
    frame, _, err = child.run("!pip install requests")
    assert frame["error"].startswith("SyntaxError: shell commands (!...) are notebook syntax, not Python")
    assert "!pip install requests" in err
    frame, _, _ = child.run("%timeit 1 + 1")
    assert frame["error"].startswith("SyntaxError: IPython magics (%...) are notebook syntax")
    # inside a string, such a line is text, and stays as written
    assert child.run('text = """\n%matplotlib inline\n"""\ntext')[0]["value"] == "'\\n%matplotlib inline\\n'"


def test_failing_repr_is_an_error_of_the_cell(child):
    child.run("class Opaque:\n    def __repr__(self):\n        raise RuntimeError('no repr')")
    frame, _, err = child.run("Opaque()")
    assert frame["exit_code"] == 1 and frame["error"] == "RuntimeError: no repr" and "in __repr__" in err


@pytest.mark.parametrize(("code", "status", "stderr"), [
    ("import sys; sys.exit(3)", 3, ""),
    ("raise SystemExit", 0, ""),
    ("import sys; sys.exit('bye')", 1, "bye\n"),
    ("exit(300)", 300 & 0xFF, ""),
])
def test_system_exit_ends_the_cell_not_the_session(child, code, status, stderr):
    frame, _, err = child.run("kept = 'yes'\n" + code)
    assert (frame["exit_code"], frame["error"], err) == (status, None, stderr)
    assert child.run("kept")[0]["value"] == "'yes'"


def test_sigint_interrupts_the_running_cell_and_the_session_survives(child):
    pid = child.process.pid
    child.send("survivor = 'alive'\nprint('started', flush=True)\nwhile True:\n    pass")
    sent = []

    def interrupt(stdout: bytes) -> None:
        if b"started" in stdout and not sent:
            os.kill(pid, signal.SIGINT)
            sent.append(True)

    frame, out, err = child.result(on_output=interrupt)
    assert sent and out == "started\n"
    assert frame["exit_code"] == 130 and frame["error"].startswith("KeyboardInterrupt")
    assert err.rstrip().endswith("KeyboardInterrupt") and "<module>" in err
    assert "child.py" not in err and "_on_sigint" not in err  # our handler's frame is not the code's business
    assert child.run("survivor")[0]["value"] == "'alive'"


def test_sigint_between_cells_is_ignored(child):
    os.kill(child.process.pid, signal.SIGINT)
    time.sleep(0.2)
    frame, _, err = child.run("'still here'")
    assert (frame["value"], frame["exit_code"], err) == ("'still here'", 0, "")


def test_a_fork_left_running_in_the_loop_does_not_answer(child):
    """A forked copy of the interpreter that returns from the cell must exit, not read or write frames."""
    frame, _, _ = child.run("import os\nforked = os.fork()\nforked > 0")
    assert frame["value"] in ("True", None)  # the parent's frame; the copy's would carry no value
    frame, _, _ = child.run("os.waitpid(forked, 0)[1] == 0")
    assert frame["value"] == "True"  # the copy exited with the cell's status (0) instead of serving
    assert child.run("'next'")[0]["value"] == "'next'"


def test_eof_ends_the_loop_with_status_zero(fresh):
    assert fresh.run("x = 1")[0]["exit_code"] == 0
    assert fresh.close() == 0


def test_a_broken_frame_ends_the_loop_with_status_two(fresh):
    body = b"not json"
    os.write(fresh.cells_w, HEADER.pack(len(body)) + body)
    assert fresh.process.wait(timeout=DEADLINE) == 2
    assert b"sandbox protocol error" in fresh.process.stderr.read()
    fresh.close()


# Output is complete when the frame arrives ---------------------------------------------------------------
def test_all_output_is_in_the_pipes_before_the_result_frame(child):
    code = ("import ctypes, os, subprocess, sys\n"
            "for i in range(20000):\n    print(f'line {i}')\n"      # ~200 KB: more than a pipe holds
            "sys.stdout.write('no newline at the end')\n"             # still in the text buffer
            "os.write(1, b'|raw fd write')\n"
            "subprocess.run(['echo', '|from a subprocess'], check=True)\n"
            "libc = ctypes.CDLL(None)\nlibc.printf(b'|from C stdio')\n"  # C stdio buffers it: a pipe is not a tty
            "print('to stderr', file=sys.stderr, end='')")
    frame, out, err = child.run(code)
    assert frame["exit_code"] == 0
    lines = out.split("\n")
    assert lines[:20000] == [f"line {i}" for i in range(20000)]
    tail = "\n".join(lines[20000:])  # buffered pieces arrive when flushed: any order, each exactly once
    for piece in ("no newline at the end", "|raw fd write", "|from C stdio", "|from a subprocess\n"):
        assert tail.count(piece) == 1, (piece, tail)
    assert err == "to stderr"


def test_invalid_unicode_in_output_does_not_break_the_cell(child):
    frame, out, _ = child.run("print('\\udcff surrogate')\n'\\ud800'")
    assert frame["exit_code"] == 0 and "surrogate" in out and frame["value"] is not None


# Figures -------------------------------------------------------------------------------------------------
def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a well-formed PNG (signature, IHDR first, CRCs right, IEND last)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack_from("!I", data, position)
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack_from("!I", data, position + 8 + length)
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    return struct.unpack_from("!II", data, 16)


def test_figures_are_captured_as_png_without_savefig(child):
    pytest.importorskip("matplotlib")
    frame, out, err = child.run("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\n"
                                "plt.figure()\nplt.bar(['a', 'b'], [3, 5])\nNone")
    assert frame["exit_code"] == 0 and err == "" and out == ""
    assert [image["media_type"] for image in frame["images"]] == ["image/png", "image/png"]
    for image in frame["images"]:
        data = base64.b64decode(image["data"])
        width, height = _png_size(data)
        assert 100 < width < 2000 and 100 < height < 2000
        from PIL import Image

        picture = Image.open(io.BytesIO(data))
        picture.load()
        assert len(picture.getcolors(1 << 20) or range(1000)) > 2  # something was drawn, not a blank canvas
    assert child.run("len(plt.get_fignums())")[0]["value"] == "0"  # closed after capture
    assert child.run("1")[0]["images"] == []  # nothing twice


def test_show_renders_at_once_and_does_not_warn(child):
    pytest.importorskip("matplotlib")
    frame, _, err = child.run("import matplotlib.pyplot as plt\nplt.plot([3, 1])\nplt.show()\nplt.close('all')")
    assert len(frame["images"]) == 1 and err == ""  # shown, then closed: still captured, no warning


def test_a_figure_that_fails_to_render_is_reported(child):
    pytest.importorskip("matplotlib")
    code = ("import matplotlib.pyplot as plt\nfig = plt.figure()\nax = fig.gca()\n"
            "ax.text(0.5, 0.5, r'$\\frac{broken$')\nplt.figure()\nplt.plot([1, 2])\nNone")
    frame, _, err = child.run(code)
    assert frame["exit_code"] == 0 and len(frame["images"]) == 1 and "could not be rendered" in err


# Files ---------------------------------------------------------------------------------------------------
def test_files_created_and_changed_are_reported(child):
    frame, _, _ = child.run("import os, json\nos.makedirs('reports', exist_ok=True)\n"
                            "open('table.csv', 'w').write('a,b\\n1,2\\n')\n"
                            "json.dump({'k': 1}, open('reports/summary.json', 'w'))")
    files = {f["name"]: f for f in frame["files"]}
    assert set(files) == {"table.csv", "reports/summary.json"}
    assert files["table.csv"]["size"] == 8 and files["table.csv"]["media_type"] == "text/csv"
    assert files["reports/summary.json"]["media_type"] == "application/json"
    assert abs(files["table.csv"]["modified"] - (child.workdir / "table.csv").stat().st_mtime) < 1e-3
    assert child.run("x = 1")[0]["files"] == []  # untouched
    frame, _, _ = child.run("open('table.csv', 'a').write('3,4\\n')")
    assert [(f["name"], f["size"]) for f in frame["files"]] == [("table.csv", 12)]


def test_files_changed_between_cells_are_not_the_cells(child):
    (child.workdir / "uploaded.txt").write_text("from the user")  # as an upload would, between executions
    assert child.run("open('uploaded.txt').read()")[0]["files"] == []


def test_files_are_found_in_the_session_directory_after_a_chdir(child):
    frame, _, _ = child.run("import os, tempfile\nhome = os.getcwd()\nos.chdir(tempfile.gettempdir())\n"
                            "os.chdir(home)\nos.mkdir('elsewhere')\nos.chdir('elsewhere')\n"
                            "open('made-after-chdir.txt', 'w').write('x')")
    assert [f["name"] for f in frame["files"]] == ["elsewhere/made-after-chdir.txt"]
    assert child.run("os.chdir(home)")[0]["files"] == []


def test_display_prints_like_a_notebook(child):
    frame, out, _ = child.run("display({'a': 1}, 'text')")
    assert (frame["exit_code"], out) == (0, "{'a': 1}\ntext\n")


def test_links_and_deleted_files_are_not_reported(child):
    frame, _, _ = child.run("import os\nopen('gone.txt', 'w').close()\nos.remove('gone.txt')\n"
                            "os.symlink('/etc/passwd', 'link')")
    assert frame["files"] == []


# The template's preparation ------------------------------------------------------------------------------
@pytest.mark.parametrize("given_by", ["argument", "environment"])
def test_prepare_warms_and_stays_single_threaded(tmp_path, given_by):
    argument = repr(str(tmp_path)) if given_by == "argument" else ""
    environment = {"MPLCONFIGDIR": str(tmp_path)} if given_by == "environment" else {}
    code = ("import os, sys, threading\nfrom local_code_interpreter.sandbox import child\n"
            f"missing = child.prepare({argument})\n"
            "print(missing, threading.active_count(), len(os.listdir('/proc/self/task')), "
            "'numpy' in sys.modules, 'pandas' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'])\n"
            "import matplotlib\nfrom matplotlib import font_manager\n"
            "print(matplotlib.get_backend(), matplotlib.get_cachedir(), font_manager._get_font.cache_info().currsize)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE,
                            env={**TEMPLATE_ENV, **environment})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "[] 1 1 True True 1"
    # No font left cached: matplotlib drops its font cache in every forked child, which would free the
    # template's font there again and again (about 200 copy-on-write faults per child).
    assert second == f"module://local_code_interpreter.sandbox.figures {tmp_path} 0"
    assert any(name.startswith("fontlist") for name in os.listdir(tmp_path))  # built once, here


def test_prepare_refuses_a_threaded_template():
    code = ("import threading, time\nthreading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
            "from local_code_interpreter.sandbox import child\nchild._check_single_threaded()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 1 and "must stay single-threaded" in result.stderr


def test_private_config_dir_is_not_taken_from_someone_else(tmp_path, monkeypatch):
    from local_code_interpreter.sandbox import child

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    own = child._private_dir("lci-test")
    assert own == str(tmp_path / "lci-test") and (os.stat(own).st_mode & 0o777) == 0o700
    assert child._private_dir("lci-test") == own  # reused
    os.chmod(own, 0o777)  # loose: anyone could have planted a cache there
    assert child._private_dir("lci-test") != own
    (tmp_path / "lci-link").symlink_to(own)
    assert child._private_dir("lci-link") != str(tmp_path / "lci-link")
