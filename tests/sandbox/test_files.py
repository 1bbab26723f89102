"""Session-directory file operations (`sandbox/files.py`) against hostile names and a hostile directory.

The code in a session owns its directory: it can plant symbolic links to anywhere, FIFOs, hard links, and
make directories unreadable. Every test here sets such a trap with real files and checks that uploads,
downloads, deletes, listings and usage neither follow it, nor hang on it, nor lose data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import pytest

from local_code_interpreter.sandbox import files
from local_code_interpreter.sandbox.types import FileInfo, InvalidFileName, QuotaExceeded

NOBODY = 65534


@pytest.fixture
def session(tmp_path) -> Path:
    path = tmp_path / "session"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory beside the session holding a secret the code must never reach through us."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("SECRET")
    return path


@pytest.fixture(autouse=True)
def no_hang():
    """An operation that blocks (a FIFO opened for reading) fails the test instead of hanging it."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the operation blocked"))
    signal.alarm(20)
    yield
    signal.alarm(0)


def names_in(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# Names ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.csv", "reports/2026/q1.json", ".hidden", "..dots", "a..b", "with space.txt",
                                  "résumé.pdf", "数据.csv", "chart 📈.png", "tab-free\\backslash", "x" * 255,
                                  "/".join(["d" * 200] * 5)[:1024].rstrip("/")])
def test_good_names_are_kept_as_given(name):
    assert files.check_name(name) == name


@pytest.mark.parametrize(("name", "reason"), [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("//double", "absolute"),
    ("..", "'..' component"),
    ("../escape.txt", "'..' component"),
    ("a/../../escape.txt", "'..' component"),
    (".", "'.' component"),
    ("a/./b", "'.' component"),
    ("a//b", "empty component"),
    ("trailing/", "empty component"),
    ("nul\0byte", "NUL"),
    ("x.csv\0.png", "NUL"),
    ("line\nbreak", "control character"),
    ("carriage\rreturn", "control character"),
    ("escape\x1b[31m", "control character"),
    ("del\x7f", "control character"),
    ("c1\x85next-line", "control character"),
    ("lone\ud800surrogate", "not valid Unicode"),
    ("x" * 256, "longer than 255 bytes"),
    ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8, 128 characters
    ("/".join(["d" * 100] * 11), "bytes long"),
])
def test_bad_names_are_refused_with_the_reason(name, reason):
    with pytest.raises(InvalidFileName, match=reason.replace("(", r"\(")):
        files.check_name(name)


@pytest.mark.parametrize("name", [b"bytes.txt", None, 7, Path("a.txt")])
def test_names_must_be_text(name):
    with pytest.raises(InvalidFileName, match="must be text"):
        files.check_name(name)


@pytest.mark.parametrize("operation", ["write", "read", "delete"])
@pytest.mark.parametrize("name", ["/etc/passwd", "../outside/secret.txt", "a/../../outside/secret.txt", "x\0y"])
def test_every_operation_checks_the_name_first(session, outside, operation, name):
    call = {"write": lambda: files.write(session, name, b"PWNED"), "read": lambda: files.read(session, name),
            "delete": lambda: files.delete(session, name)}[operation]
    with pytest.raises(InvalidFileName):
        call()
    assert (outside / "secret.txt").read_text() == "SECRET" and names_in(session) == set()


# Writing -------------------------------------------------------------------------------------------------
def test_write_read_round_trip_with_new_directories(session):
    info = files.write(session, "in/put/data.csv", b"a,b\n1,2\n")
    assert info.name == "in/put/data.csv" and info.size == 8 and info.media_type == "text/csv"
    assert abs(info.modified - (session / "in/put/data.csv").stat().st_mtime) < 1e-3
    assert files.read(session, "in/put/data.csv") == b"a,b\n1,2\n"
    assert stat.S_IMODE((session / "in").stat().st_mode) == files.DIR_MODE
    assert stat.S_IMODE((session / "in/put/data.csv").stat().st_mode) == files.FILE_MODE
    assert files.stat_file(session, "in/put/data.csv") == info


def test_write_replaces_atomically_and_leaves_no_temporary_file(session):
    files.write(session, "data.bin", b"old")
    before = (session / "data.bin").stat().st_ino
    files.write(session, "data.bin", b"new" * 1000)
    assert (session / "data.bin").read_bytes() == b"new" * 1000
    assert (session / "data.bin").stat().st_ino != before  # a new file renamed over, never a partial rewrite
    assert names_in(session) == {"data.bin"}


def test_write_accepts_an_open_descriptor_and_leaves_it_open(session):
    fd = os.open(session, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files.write(fd, "via-fd.txt", b"ok")
        assert files.read(fd, "via-fd.txt") == b"ok" and [f.name for f in files.listing(fd)] == ["via-fd.txt"]
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_write_through_a_planted_directory_symlink_is_refused(session, outside):
    (session / "data").symlink_to(outside)
    with pytest.raises(InvalidFileName, match="symbolic link"):
        files.write(session, "data/secret.txt", b"PWNED")
    with pytest.raises(InvalidFileName, match="symbolic link"):
        files.write(session, "data/new.txt", b"PWNED")
    assert sorted(os.listdir(outside)) == ["secret.txt"] and (outside / "secret.txt").read_text() == "SECRET"


def test_write_over_a_planted_file_symlink_replaces_the_link_not_its_target(session, outside):
    (session / "report.txt").symlink_to(outside / "secret.txt")
    files.write(session, "report.txt", b"mine")
    assert not (session / "report.txt").is_symlink() and (session / "report.txt").read_bytes() == b"mine"
    assert (outside / "secret.txt").read_text() == "SECRET"


def test_write_onto_a_directory_or_below_a_file_is_refused(session):
    (session / "folder").mkdir()
    (session / "folder" / "kept.txt").write_text("kept")
    with pytest.raises(InvalidFileName, match="is a directory"):
        files.write(session, "folder", b"x")
    (session / "plain.txt").write_text("plain")
    with pytest.raises(InvalidFileName, match="not a directory"):
        files.write(session, "plain.txt/child", b"x")
    assert names_in(session) == {"folder", "folder/kept.txt", "plain.txt"}


def test_write_onto_a_fifo_replaces_it_without_blocking(session):
    os.mkfifo(session / "pipe")
    files.write(session, "pipe", b"data")
    assert (session / "pipe").read_bytes() == b"data"


def test_write_sets_the_owner_for_the_code(session):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root (the server drops code to nobody only as root)")
    files.write(session, "deep/er/file.txt", b"x", uid=NOBODY)
    files.write(session, "other/file.txt", b"x", (NOBODY, 4321))  # owner=(uid, gid) positionally
    for path, group in (("deep", NOBODY), ("deep/er", NOBODY), ("deep/er/file.txt", NOBODY),
                        ("other", 4321), ("other/file.txt", 4321)):
        info = (session / path).stat()
        assert (info.st_uid, info.st_gid) == (NOBODY, group), path


# Quota ---------------------------------------------------------------------------------------------------
def test_quota_refuses_a_write_that_would_pass_it_and_leaves_nothing(session):
    files.write(session, "a.bin", b"a" * 40_000, quota_bytes=100_000)
    files.write(session, "b.bin", b"b" * 40_000, quota_bytes=100_000)
    with pytest.raises(QuotaExceeded, match="quota of 100000 bytes"):
        files.write(session, "c.bin", b"c" * 40_000, quota_bytes=100_000)
    assert names_in(session) == {"a.bin", "b.bin"}
    with pytest.raises(QuotaExceeded):
        files.write(session, "new/dir/huge.bin", b"h" * 200_000, quota_bytes=100_000)  # refused before writing
    assert names_in(session) == {"a.bin", "b.bin"}


def test_quota_counts_what_a_replacement_frees(session):
    for _ in range(5):
        files.write(session, "same.bin", b"s" * 60_000, quota_bytes=100_000)
    assert files.usage(session) <= 100_000


def test_quota_counts_what_the_code_wrote_itself(session):
    (session / "made-by-code.bin").write_bytes(os.urandom(90_000))
    with pytest.raises(QuotaExceeded):
        files.write(session, "upload.bin", b"u" * 20_000, quota_bytes=100_000)


def test_usage_counts_blocks_on_disk_everywhere(session):
    (session / "sub").mkdir()
    (session / "sub" / "f").write_bytes(b"x" * 10_000)
    (session / "g").write_bytes(b"y")
    expected = sum(p.lstat().st_blocks * 512 for p in session.rglob("*"))
    assert files.usage(session) == expected >= 10_000 and files.count(session) == 3


# Reading -------------------------------------------------------------------------------------------------
def _open_and_close(directory, name):
    files.open_file(directory, name).close()


# A download opens the file (`open_file`) where `read` reads it: the same refusals.
READERS = pytest.mark.parametrize("read", [files.read, _open_and_close], ids=["read", "open_file"])


@READERS
def test_read_refuses_planted_symlinks(session, outside, read):
    (session / "leak.txt").symlink_to(outside / "secret.txt")
    (session / "dir").symlink_to(outside)
    (session / "root").symlink_to("/")
    for name in ("leak.txt", "dir/secret.txt", "root/etc/passwd"):
        with pytest.raises(InvalidFileName, match="symbolic link"):
            read(session, name)


@READERS
def test_read_refuses_a_fifo_without_blocking(session, read):
    os.mkfifo(session / "fifo.csv")  # a plain open() for reading would wait for a writer forever
    with pytest.raises(InvalidFileName, match="not a regular file"):
        read(session, "fifo.csv")


@READERS
def test_read_refuses_directories_and_reports_missing_files(session, read):
    (session / "folder").mkdir()
    with pytest.raises(InvalidFileName, match="is a directory"):
        read(session, "folder")
    for name in ("absent.txt", "folder/absent.txt", "no/such/dir.txt"):
        with pytest.raises(FileNotFoundError, match="no file"):
            read(session, name)


@READERS
def test_read_below_a_file_is_refused(session, read):
    (session / "plain.txt").write_text("plain")
    with pytest.raises(InvalidFileName, match="not a directory"):
        read(session, "plain.txt/x")
    with pytest.raises(InvalidFileName):
        read(session, "../outside/secret.txt")


def test_read_size_cap(session):
    (session / "big.bin").write_bytes(b"b" * 5000)
    with pytest.raises(QuotaExceeded, match="at most 4096"):
        files.read(session, "big.bin", max_bytes=4096)
    assert files.read(session, "big.bin", max_bytes=5000) == b"b" * 5000


def test_read_refuses_a_hard_link_to_someone_elses_file(session, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a file of another owner needs root")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("OTHER USER'S DATA")
    os.chown(foreign, 4321, 4321)
    os.link(foreign, session / "linked.txt")
    with pytest.raises(InvalidFileName, match="another user"):
        files.read(session, "linked.txt", uid=NOBODY)
    files.write(session, "own.txt", b"mine", uid=NOBODY)
    assert files.read(session, "own.txt", uid=NOBODY) == b"mine"


def _read_all(opened: files.OpenedFile, piece: int) -> bytes:
    async def pieces():
        chunks = []
        while chunk := await opened.read(piece):
            chunks.append(chunk)
        return b"".join(chunks)

    return asyncio.run(pieces())


def test_an_opened_file_is_read_a_piece_at_a_time_up_to_its_size_when_opened(session):
    """The code may write the file while it is downloaded: the download sends the size it announced, never more,
    and fewer bytes (never made-up ones) if the file shrank."""
    (session / "grows.bin").write_bytes(b"a" * 1000)
    opened = files.open_file(session, "grows.bin")
    with open(session / "grows.bin", "ab") as more:
        more.write(b"b" * 500)
    assert opened.size == 1000 and _read_all(opened, 300) == b"a" * 1000
    opened.close()
    (session / "shrinks.bin").write_bytes(b"c" * 1000)
    opened = files.open_file(session, "shrinks.bin")
    os.truncate(session / "shrinks.bin", 400)
    assert opened.size == 1000 and _read_all(opened, 300) == b"c" * 400
    opened.close()
    assert asyncio.run(opened.read(10)) == b""  # closed: nothing more


def test_an_opened_file_outlives_its_session_directory(session):
    """A download that began before the session ended (its directory removed) still sends what it announced."""
    (session / "report.csv").write_bytes(b"x,y\n" * 100)
    opened = files.open_file(session, "report.csv")
    shutil.rmtree(session)
    assert _read_all(opened, 64) == b"x,y\n" * 100
    opened.close()


def test_closing_during_a_read_closes_the_descriptor_after_it(session):
    """A download cancelled while a worker thread reads must not close the descriptor under that read: its number
    could name another file by then (another session's pipe), which the read would consume. It is closed when the
    read returns."""
    read_r, read_w = os.pipe()  # a descriptor whose read blocks until we let it go
    opened = files.OpenedFile(read_r, 100)

    async def cancel_mid_read():
        reading = asyncio.ensure_future(opened.read(100))
        while opened._reading is None or not opened._reading.running():
            await asyncio.sleep(0.001)
        reading.cancel()
        opened.close()
        await asyncio.sleep(0.05)
        still_open = _is_open(read_r)
        os.write(read_w, b"go")  # the read returns
        await asyncio.sleep(0.05)
        return still_open

    try:
        assert asyncio.run(cancel_mid_read()) is True
        assert not _is_open(read_r)
    finally:
        os.close(read_w)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# Deleting ------------------------------------------------------------------------------------------------
def test_delete_removes_files_and_links_never_their_targets(session, outside):
    files.write(session, "a/b.txt", b"x")
    (session / "link").symlink_to(outside / "secret.txt")
    (session / "dirlink").symlink_to(outside)
    files.delete(session, "a/b.txt")
    files.delete(session, "link")
    with pytest.raises(InvalidFileName, match="symbolic link"):
        files.delete(session, "dirlink/secret.txt")
    assert (outside / "secret.txt").read_text() == "SECRET"
    assert names_in(session) == {"a", "dirlink"}


def test_delete_refuses_directories_and_reports_missing(session):
    (session / "folder").mkdir()
    with pytest.raises(InvalidFileName, match="is a directory"):
        files.delete(session, "folder")
    with pytest.raises(FileNotFoundError):
        files.delete(session, "absent")
    assert (session / "folder").is_dir()


# Listing -------------------------------------------------------------------------------------------------
def test_listing_shows_regular_files_only_and_never_follows_links(session, outside):
    files.write(session, "b.csv", b"1")
    files.write(session, "a/z.json", b"{}")
    (session / "etc").symlink_to("/etc")
    (session / "out").symlink_to(outside)
    (session / "leak").symlink_to(outside / "secret.txt")
    os.mkfifo(session / "fifo")
    listed = files.listing(session)
    assert [f.name for f in listed] == ["a/z.json", "b.csv"]
    assert all(isinstance(f, FileInfo) for f in listed)
    assert listed[0].media_type == "application/json" and listed[1].size == 1


def test_listing_is_bounded(session):
    for i in range(50):
        (session / f"f{i:02}").write_text("x")
    assert len(files.listing(session, limit=10)) == 10


# A directory the code locked ------------------------------------------------------------------------------
def _as_nobody(function, directory: Path):
    """Run `function()` as a non-root server would: in a forked child as `nobody` when we are root, else here."""
    if os.geteuid() != 0:
        return repr(function())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, repr(function()).encode())
            status = 0
        except BaseException as error:
            os.write(write_end, f"{type(error).__name__}: {error}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        output = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output


@pytest.fixture
def locked():
    """A session directory of the non-root server's uid (`nobody` when the tests run as root, else ours) with a
    locked subdirectory and the directory itself locked, as the code (running as that uid) can leave it."""
    base = Path(tempfile.mkdtemp(prefix="lci-files-"))
    os.chmod(base, 0o755)
    session = base / "session"
    (session / "sub" / "inner").mkdir(parents=True)
    (session / "sub" / "inner" / "hidden.txt").write_text("hidden")
    (session / "top.txt").write_text("top")
    if os.geteuid() == 0:
        for path in [session, *session.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    os.chmod(session / "sub" / "inner", 0o000)
    os.chmod(session / "sub", 0o300)  # writable and searchable, not listable
    os.chmod(session, 0o000)
    yield session
    for path in [session, session / "sub", session / "sub" / "inner"]:
        if path.is_dir():
            os.chmod(path, 0o700)  # so that a non-root run can remove it
    shutil.rmtree(base)


def test_a_locked_directory_hides_nothing_from_a_non_root_server(locked):
    def operations():
        listed = [f.name for f in files.listing(str(locked))]
        files.write(str(locked), "sub/inner/new.txt", b"new")
        content = files.read(str(locked), "sub/inner/hidden.txt")
        files.delete(str(locked), "top.txt")
        return listed, content, [f.name for f in files.listing(str(locked))]

    assert _as_nobody(operations, locked) == repr((["sub/inner/hidden.txt", "top.txt"], b"hidden",
                                                   ["sub/inner/hidden.txt", "sub/inner/new.txt"]))
    assert stat.S_IMODE(os.stat(locked).st_mode) & 0o700 == 0o700  # the owner's rights are back


def test_a_directory_locked_after_it_was_opened_hides_nothing_from_a_non_root_server(locked):
    """The supervisor holds the session directory open; the code locks it afterwards."""
    def operations():
        os.chmod(str(locked), 0o700)
        fd = os.open(str(locked), os.O_RDONLY | os.O_DIRECTORY)
        os.chmod(str(locked), 0o000)  # what `os.chmod('.', 0)` in a cell does
        listed = [f.name for f in files.listing(fd)]
        os.chmod(str(locked), 0o000)
        files.write(fd, "new.txt", b"new")
        os.chmod(str(locked), 0o000)
        content = files.read(fd, "top.txt")
        os.chmod(str(locked), 0o000)
        files.delete(fd, "new.txt")
        os.chmod(str(locked), 0o000)
        return listed, content, files.usage(fd) > 0

    assert _as_nobody(operations, locked) == repr((["sub/inner/hidden.txt", "top.txt"], b"top", True))


def test_a_locked_directory_does_not_stop_root(locked):
    if os.geteuid() != 0:
        pytest.skip("the tests do not run as root")
    assert [f.name for f in files.listing(locked)] == ["sub/inner/hidden.txt", "top.txt"]
    assert files.read(locked, "sub/inner/hidden.txt") == b"hidden"
    files.write(locked, "sub/inner/up.txt", b"up", uid=NOBODY)
    assert (locked / "sub" / "inner" / "up.txt").stat().st_uid == NOBODY


def test_a_locked_file_is_read_by_its_non_root_owner(locked):
    os.chmod(locked, 0o700)
    os.chmod(locked / "top.txt", 0o000)
    assert _as_nobody(lambda: files.read(str(locked), "top.txt"), locked) == repr(b"top")
