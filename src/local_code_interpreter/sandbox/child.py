"""What runs inside the confined child: one cell (a one-shot execution) or a session's REPL loop.

`prepare()` runs once in the warm template before any fork: warm imports (numpy, pandas, matplotlib with our
inline Agg back end and a pre-built font cache), one BLAS thread, and a check that the process is still
single-threaded (fork copies only the calling thread). `serve()` runs in each forked, already confined
child, in its working directory:

    cells in  (fd 3): 4-byte big-endian length + UTF-8 JSON  {"code": str}
    results out (fd 4): same framing  {"exit_code", "value", "images", "files", "error"}

Each cell runs in one persistent `__main__` namespace, like a notebook: the repr of a last bare expression is
returned as `value` (not printed); an exception prints its traceback (without our frames) to stderr;
`SystemExit(n)` ends the cell with exit code n; SIGINT (the supervisor's timeout) interrupts the running cell
only. The result frame is written after the cell's output was flushed to fds 1 and 2, so a reader that drains
those pipes when the frame arrives has all of it. EOF on the cells pipe ends the loop.
"""

from __future__ import annotations

import _signal as _handlers  # the C half of `signal`, without its enum wrapping
import ast
import base64
import builtins
import io
import json
import linecache
import mimetypes
import os
import re
import resource
import stat
import struct
import sys
import tempfile
import threading
import types

# The modules model-written code reaches for most, imported once in the template so no child pays for them.
# Every template warms the standard library's; the warm template also the libraries (about 70 MiB of heap, and
# each of its children pays for that in fork, copy-on-write faults and exit: see `sandbox/startup.py`).
STDLIB_WARM_MODULES = ("json", "math", "re", "random", "statistics", "datetime", "collections", "itertools",
                       "functools", "decimal", "fractions", "string", "textwrap", "traceback", "csv", "io",
                       "pathlib", "subprocess", "hashlib", "base64", "heapq", "bisect", "dataclasses", "typing",
                       "asyncio", "operator", "copy", "pprint", "time", "uuid", "zipfile", "gzip", "tempfile",
                       "shutil", "glob", "sqlite3", "urllib.parse", "unicodedata", "enum", "contextlib")
LIBRARY_WARM_MODULES = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "PIL.Image")
WARM_MODULES = STDLIB_WARM_MODULES + LIBRARY_WARM_MODULES
# Read before numpy loads its BLAS: one thread each, so the template stays single-threaded and forkable.
BLAS_THREAD_ENV = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                                          "BLIS_NUM_THREADS")}
VALUE_LIMIT = 20000  # characters of a last expression's repr
MAX_FRAME = 64 * 1024 * 1024
SNAPSHOT_ENTRIES = 10000  # directory entries looked at to find the files a cell created or changed
MAX_REPORTED_FILES = 1000

_HEADER = struct.Struct("!I")
_THIS_FILE = __file__
_running = False  # SIGINT interrupts a running cell only; between cells it is ignored
_workdir = "."  # the session directory (the working directory when serve() started), even if a cell chdirs
# A child of the lean template imports the libraries itself, if its code does: see `_LibraryImports`.
MATPLOTLIB_HOME = ".matplotlib"  # in the session directory, as matplotlib keeps it in a home directory
FONT_CACHE = re.compile(r"fontlist-v[^/]+\.json")  # the names of matplotlib's font cache files
FIGURES_BACKEND = "module://local_code_interpreter.sandbox.figures"  # figures.BACKEND (that module needs matplotlib)
_lean_fonts: dict[str, bytes] | None = None  # in a lean template: the font cache the warm one built, by file name
_quiet: dict[str, tuple[int, int, int]] = {}  # files that set-up wrote during a cell: not the cell's own


def prepare(mpl_config_dir: str | None = None, lean: bool = False) -> list[str]:
    """Warm the template: imports, matplotlib set-up, mimetypes. Returns the warm modules that are missing.

    Call once, before any fork, in the process that will fork the children. `mpl_config_dir` (default:
    $MPLCONFIGDIR, else a directory of this uid under the temporary directory) holds matplotlib's font cache,
    built here, so that no child (which cannot write there, nor needs a HOME) ever rebuilds it. `lean`: the
    standard library's warm modules only (a child that imports a library later finds the same settings and
    the font cache a warm template built).
    """
    os.environ.update(BLAS_THREAD_ENV)
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["MPLCONFIGDIR"] = (mpl_config_dir or os.environ.get("MPLCONFIGDIR")
                                  or _private_dir(f"lci-matplotlib-{os.geteuid()}"))
    missing = []
    for name in STDLIB_WARM_MODULES if lean else WARM_MODULES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if lean:
        global _lean_fonts
        _lean_fonts = _font_cache(os.environ["MPLCONFIGDIR"])
    mimetypes.init()
    if "matplotlib.pyplot" in sys.modules:
        _warm_matplotlib()
    _rehearse()
    _check_single_threaded()
    import gc

    gc.collect()
    gc.freeze()  # keep the warm heap shared between forks
    return missing


def _private_dir(name: str) -> str:
    """A directory only this uid can use, reused across starts (so the font cache is built once)."""
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return tempfile.mkdtemp(prefix=name + "-")  # someone else's, or loose: do not trust it
    return path


def _font_cache(directory: str) -> dict[str, bytes]:
    """matplotlib's font cache files (fontlist-v*.json, built by the warm template), read while we may."""
    found = {}
    try:
        names = [name for name in os.listdir(directory) if FONT_CACHE.fullmatch(name)]
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                found[name] = f.read()
    except OSError:
        pass  # none yet (matplotlib missing): a child that imports it builds its own
    return found


def _warm_matplotlib() -> None:
    """Agg through our inline back end, and one figure drawn so the PNG path is loaded and the cache built."""
    import matplotlib
    import matplotlib.pyplot as plt

    from . import figures

    matplotlib.use(figures.BACKEND)
    plt.figure(figsize=(1, 1)).gca().plot([0, 1])
    figures.collect()
    # matplotlib empties its FreeType font cache in every forked child (an at-fork hook: fonts are not shared
    # across a fork), so a font cached here is only freed again in each child: about 200 copy-on-write page
    # faults per child, for a font it must load again anyway. Empty it once, here.
    from matplotlib import font_manager

    clear = getattr(getattr(font_manager, "_get_font", None), "cache_clear", None)
    if clear is not None:
        clear()


def _check_single_threaded() -> None:
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["?"]
    if threading.active_count() != 1 or len(tasks) != 1:
        raise RuntimeError(f"the warm template must stay single-threaded to fork safely: "
                           f"{threading.active_count()} Python thread(s), {len(tasks)} task(s) after the warm imports")


# The REPL loop --------------------------------------------------------------------------------------------
def serve(cells_fd: int = 3, results_fd: int = 4) -> int:
    """Run cells from `cells_fd` until EOF, one result frame each on `results_fd`. Returns the exit status."""
    for fd in (cells_fd, results_fd):
        os.set_inheritable(fd, False)  # the code's own children (subprocess, fork+exec) never hold them
    _own_streams()
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    main.__dict__["display"] = display
    global _workdir
    _workdir = os.getcwd()
    sys.modules["__main__"] = main  # pickle, dataclasses and typing find what the cells define
    sys.argv = [""]
    if _lean_fonts is not None:  # (the lean template gave us the BLAS settings: one thread, as in a warm one)
        sys.meta_path.insert(0, _LibraryImports())
    _handlers.signal(_handlers.SIGINT, _on_sigint)  # not signal.signal: its enum wrapping costs a fresh child ~30 pages
    me = os.getpid()
    if not _warm_up():
        return 1
    count = 0
    while True:
        try:
            request = _read_frame(cells_fd)
        except ValueError as error:
            print(f"[sandbox protocol error: {error}]", file=sys.stderr, flush=True)
            return 2
        if request is None:
            return 0
        count += 1
        result = run_cell(request.get("code", ""), main.__dict__, f"<cell {count}>")
        if os.getpid() != me:  # a fork the code made came back here: it must not answer for us
            os._exit(result["exit_code"])
        _write_frame(results_fd, result)


class _LibraryImports:
    """In a child of the lean template, what a warm child has from its template, when the code first needs it.

    - The first import of a module outside the standard library raises the address space limit (soft) to the
      hard one: what a warm template's child has (its libraries are mapped already). Until then a cell's
      allocations meet the limit as soon as a warm child's would (MemoryError rather than the memory quota's kill).
    - The first `import matplotlib` finds our figures back end and the font cache (written into `MATPLOTLIB_HOME`,
      the only writable place, and not reported as the cell's files). Without them matplotlib would run fc-list
      and rebuild its cache into the session directory (about 0.5 s, files the code never made) and capture no
      chart. Then it steps aside.
    """

    def __init__(self) -> None:
        self.raised = False

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002 - the meta path finder protocol
        if not self.raised and name.partition(".")[0] not in sys.stdlib_module_names:
            self.raised = True
            try:
                resource.setrlimit(resource.RLIMIT_AS, (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2)
            except (OSError, ValueError):
                pass
        if name == "matplotlib":
            sys.meta_path.remove(self)
            _matplotlib_home()
        return None  # the regular finders import it


def _matplotlib_home() -> None:
    home = os.path.join(_workdir, MATPLOTLIB_HOME)
    try:
        os.makedirs(home, exist_ok=True)
        for name, data in (_lean_fonts or {}).items():
            path = os.path.join(home, name)
            if not os.path.lexists(path):
                with open(path, "xb") as f:
                    f.write(data)
                info = os.stat(path, follow_symlinks=False)
                _quiet[f"{MATPLOTLIB_HOME}/{name}"] = (info.st_size, info.st_mtime_ns, info.st_ino)
    except OSError as error:
        print(f"[matplotlib's font cache could not be set up ({error}); it builds its own]", file=sys.stderr)
    os.environ.setdefault("MPLCONFIGDIR", home)
    os.environ.setdefault("MPLBACKEND", FIGURES_BACKEND)


WARM_UP_CELL = "print(0)\n0"  # what most first cells do: print a line, show a value


def _warm_up() -> bool:
    """Run a cell of our own in a throwaway namespace before reading the first one: the pages a fresh child's first
    cell copies from the template (page faults and lazy set-up) are copied now, while it waits as a spare, with no
    round trip through the supervisor. It takes the path a request's cell takes: its frame read from a pipe, a line
    printed (to fd 1, which points at that pipe meanwhile) and a value shown, the result frame written; a first
    `print(...)` cell took 61 copy-on-write faults and 0.41 ms more CPU than the next one with an empty warm-up
    cell, on the request's path. The pipe is ours and thrown away: nothing reaches the supervisor. The session's
    namespace is untouched. A child that cannot run it ends: the supervisor sees the exit, logs it and hands out
    another. Files are not its business: a session opened before its child finished warming up may already have
    an upload landing in the directory."""
    namespace = {"__builtins__": builtins, "__name__": "__warm__"}
    _flush()  # nothing written before (the template's own streams) goes into our pipe
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 here (a test's child): only the frames' path, and no output
        saved = None
    try:
        _write_frame(write_end, {"code": WARM_UP_CELL if saved is not None else "pass"})
        request = _read_frame(read_end)
        if saved is not None:
            os.dup2(write_end, 1)
        try:
            result = run_cell(request["code"], namespace, "<warm-up>")
        finally:
            if saved is not None:
                os.dup2(saved, 1)  # inheritable, as fd 1 was: the code's subprocesses write to the real pipe
        _write_frame(write_end, result)  # a line and a small frame: far below what a pipe holds
    finally:
        for fd in (read_end, write_end, saved):
            if fd is not None:
                os.close(fd)
    linecache.cache.pop("<warm-up>", None)
    _sources.pop("<warm-up>", None)
    return result["exit_code"] == 0 and not result["error"]


REHEARSALS = 10  # past CPython 3.11's quickening of a function (at its 8th call): children find it specialized


def _rehearse() -> None:
    """Run the warm-up cell here, in the template, a few times before any fork, in a throwaway directory: what a
    cell sets up lazily the first time (the C library's handle, caches, specialized bytecode) is then set up once
    and shared, not copied page by page by every child (35-50 of a lean child's 700 copy-on-write faults). The
    cell is `pass`: no one's code or data is involved, and the template still never runs a request's."""
    global _workdir
    saved = _workdir
    with tempfile.TemporaryDirectory(prefix="lci-rehearsal-") as directory:
        _workdir = directory
        try:
            for _ in range(REHEARSALS):
                _warm_up()  # a failure shows in every child's own warm-up, which ends it and is logged
        finally:
            _workdir = saved


def run_cell(code: str, namespace: dict, filename: str = "<cell>") -> dict:
    """Run one cell in `namespace`; the result frame's content. Output is flushed before it returns."""
    global _running
    before = snapshot(_workdir)
    value = error = None
    exit_code = 0
    try:
        try:
            _running = True
            value = _execute(code, namespace, filename)
        finally:
            _running = False
    except SystemExit as exit_:
        exit_code = _exit_status(exit_)
    except KeyboardInterrupt as interrupt:
        _print_traceback(interrupt, filename)
        exit_code, error = 130, "KeyboardInterrupt: the cell was interrupted (its time ran out)"
    except BaseException as exception:
        _print_traceback(exception, filename)
        exit_code, error = 1, _describe(exception)
    images = _capture_figures()
    _flush()
    before.update(_quiet)  # what set-up wrote is reported only if the code then changes it
    _quiet.clear()
    files = changed_files(before, snapshot(_workdir))
    return {"exit_code": exit_code, "value": value, "images": images, "files": files, "error": error}


def _execute(code: str, namespace: dict, filename: str) -> str | None:
    """Compile (top-level `await` allowed) and run; the repr of a last bare expression, or None."""
    _remember_source(filename, code)
    tree = _parse(code, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    if tree.body:
        _run(compile(tree, filename, "exec", flags, dont_inherit=True), namespace)
    if last is None:
        return None
    result = _run(compile(last, filename, "eval", flags, dont_inherit=True), namespace)
    if result is None:
        return None
    return value_text(result)


def value_text(value) -> str:
    """The repr of a value, at most `VALUE_LIMIT` characters, never built whole when it would be huge."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > VALUE_LIMIT:
        text, more = repr(value[:VALUE_LIMIT]), len(value) - VALUE_LIMIT
        return f"{text[:VALUE_LIMIT]}… [{more} more {'characters' if isinstance(value, str) else 'bytes'}]"
    if type(value) in (list, tuple, set, frozenset, dict) and len(value) > _REPR.maxlist:
        text = _REPR.repr(value) + f"  [{len(value)} items]"  # a '...' past the first items, as IPython does
    else:
        text = repr(value)
    if len(text) > VALUE_LIMIT:
        text = text[:VALUE_LIMIT] + f"… [{len(text) - VALUE_LIMIT} more characters]"
    return text


def _make_repr():
    import reprlib

    shortened = reprlib.Repr()
    shortened.maxlevel = 6
    shortened.maxlist = shortened.maxtuple = shortened.maxset = shortened.maxfrozenset = shortened.maxdict = 1000
    shortened.maxstring = shortened.maxother = shortened.maxlong = 2000
    return shortened


_REPR = _make_repr()
_sources: dict[str, int] = {}  # the cells' sources kept for tracebacks (oldest first), and their sizes
SOURCE_LIMIT = 8 * 1024 * 1024


def _remember_source(filename: str, code: str) -> None:
    """Tracebacks show the cells' source lines (from linecache); the oldest are forgotten past a total size."""
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    _sources[filename] = len(code)
    total = sum(_sources.values())
    while total > SOURCE_LIMIT and len(_sources) > 1:
        oldest = next(iter(_sources))
        total -= _sources.pop(oldest)
        linecache.cache.pop(oldest, None)


def _parse(code: str, filename: str) -> ast.Module:
    """`ast.parse`; notebook-only lines get a plain explanation: `%matplotlib inline` is ignored (figures are
    captured anyway), other magics and `!shell` lines are refused by name rather than as bare syntax errors."""
    try:
        return ast.parse(code, filename)
    except SyntaxError as error:
        if "%matplotlib" in code:  # only when the code is not Python as it stands: never inside a string
            try:
                return ast.parse(re.sub(r"(?m)^([ \t]*)%matplotlib\b.*$", r"\1pass", code), filename)
            except SyntaxError:
                pass
        line = (code.splitlines()[error.lineno - 1] if error.lineno and error.lineno <= len(code.splitlines())
                else "").lstrip()
        if line[:1] in ("!", "%"):
            kind = "shell commands (!...)" if line[0] == "!" else "IPython magics (%...)"
            error.msg = (f"{kind} are notebook syntax, not Python: use subprocess.run([...]) or plain Python "
                         "instead (packages cannot be installed here)")
            error.args = (error.msg, error.args[1]) if len(error.args) > 1 else (error.msg,)
        raise


def _run(compiled: types.CodeType, namespace: dict):
    result = eval(compiled, namespace)  # noqa: S307 - running the code is the point
    if compiled.co_flags & 0x80:  # CO_COROUTINE: the cell used top-level await
        result = _event_loop().run_until_complete(result)
    return result


_loop = None


def _event_loop():
    """One event loop per session, so tasks and futures made by one cell still work in the next."""
    global _loop
    if _loop is None or _loop.is_closed():
        import asyncio

        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def display(*objects) -> None:
    """What notebook code calls out of habit: the repr of each object on stdout (figures are captured anyway)."""
    for item in objects:
        print(item if isinstance(item, str) else repr(item))


def _on_sigint(signum, frame):
    if _running:
        raise KeyboardInterrupt


def _exit_status(exit_: SystemExit) -> int:
    code = exit_.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _print_traceback(exception: BaseException, filename: str) -> None:
    """The traceback from the cell's own frame on (ours are not the code's business)."""
    import traceback

    tb = exception.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _THIS_FILE:
        tb = tb.tb_next
    cell = tb  # past an event loop's frames (top-level await), from the cell's own frame when it is there
    while cell is not None and cell.tb_frame.f_code.co_filename != filename:
        cell = cell.tb_next
    tb = cell or tb
    if isinstance(exception, SyntaxError):
        tb = None
    try:
        report = traceback.TracebackException(type(exception), exception, tb, compact=True)
        # ...and not our SIGINT handler's frame at the end either
        report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename != _THIS_FILE])
        sys.stderr.write("".join(report.format()))
    except Exception:  # a hostile exception (its __str__ raises) still gets a line
        print(f"{type(exception).__name__} (its message could not be shown)", file=sys.stderr)


def _describe(exception: BaseException) -> str:
    try:
        message = str(exception)
    except Exception:
        message = "(its message could not be shown)"
    text = f"{type(exception).__name__}: {message}" if message else type(exception).__name__
    return text[:1000]


def _capture_figures() -> list[dict]:
    figures = sys.modules.get("local_code_interpreter.sandbox.figures")
    if figures is None:
        if "matplotlib.pyplot" not in sys.modules:
            return []
        figures = _figures_backend()
        if figures is None:
            return []
    try:
        images = figures.collect()
    except Exception as error:
        print(f"[figures could not be captured: {type(error).__name__}: {error}]", file=sys.stderr)
        return []
    return [{"media_type": "image/png", "data": base64.b64encode(data).decode("ascii")} for data in images]


def _figures_backend():
    """pyplot was imported by a cell (the template did not warm it): capture through our module all the same."""
    try:
        from . import figures
    except Exception:
        return None
    return figures


# Output -------------------------------------------------------------------------------------------------
def _own_streams() -> None:
    """Fresh line-buffered UTF-8 writers on fds 1 and 2 (nothing buffered in the template comes along)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            os.fstat(fd)
        except OSError:
            continue
        stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
        setattr(sys, name, stream)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    try:
        _libc().fflush(None)  # C code's stdio buffers (printf from an extension) reach the pipe too
    except Exception:
        pass


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        from .libc import LIBC

        _LIBC = LIBC
    return _LIBC


# Files the cell created or changed ------------------------------------------------------------------------
def snapshot(root: str = ".") -> dict[str, tuple[int, int, int]]:
    """name → (size, mtime_ns, inode) of the regular files below `root`, symlinks not followed; bounded."""
    found: dict[str, tuple[int, int, int]] = {}
    pending, seen = [""], 0
    while pending and seen < SNAPSHOT_ENTRIES:
        prefix = pending.pop()
        try:
            with os.scandir(os.path.join(root, prefix) if prefix else root) as listing:
                for entry in listing:
                    seen += 1
                    if seen > SNAPSHOT_ENTRIES:
                        break
                    name = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(name + "/")
                    elif entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found[name] = (info.st_size, info.st_mtime_ns, info.st_ino)
        except OSError:
            continue  # unreadable or removed meanwhile
    return found


def changed_files(before: dict, after: dict) -> list[dict]:
    names = sorted(name for name, signature in after.items() if before.get(name) != signature)
    return [{"name": name, "size": after[name][0], "modified": after[name][1] / 1e9,
             "media_type": mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"}
            for name in names[:MAX_REPORTED_FILES]]


# Framing ------------------------------------------------------------------------------------------------
def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise ValueError("the frame was cut short")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> dict | None:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
    body = _read_exactly(fd, size) if size else b""
    if body is None:
        raise ValueError("the frame was cut short")
    return _decode_request(body)


def _decode_request(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except ValueError as error:
        raise ValueError(f"a frame is not JSON: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("code"), str):
        raise ValueError('a frame is not {"code": str}')
    return request


def _encode_frame(message: dict) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8", "backslashreplace")
    return _HEADER.pack(len(body)) + body


def _write_frame(fd: int, message: dict) -> None:
    view = memoryview(_encode_frame(message))
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str] | None = None) -> int:
    """`python -m local_code_interpreter.sandbox.child [CELLS_FD RESULTS_FD]`: prepare, then serve (default fds
    3 and 4). For tests and debugging: unconfined, in the current directory."""
    argv = sys.argv[1:] if argv is None else argv
    cells_fd, results_fd = (int(argv[0]), int(argv[1])) if argv else (3, 4)
    prepare()
    return serve(cells_fd, results_fd)


if __name__ == "__main__":
    from local_code_interpreter.sandbox import child

    sys.exit(child.main())
