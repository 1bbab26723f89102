"""File operations on a session directory, safe against what the code inside it did to it.

Every back end with a session directory uses these for uploads, listings, downloads and deletes. The code in
the session owns that directory and may have planted symbolic links, FIFOs, hard links, or made directories
unreadable; so every operation walks from the directory's descriptor one component at a time with
`O_NOFOLLOW` (openat), never resolves a path string, opens nothing that is not a regular file or a directory,
and writes by creating a temporary file beside the target and renaming it over (a planted symlink is
replaced, never followed). When the server is not root, a directory the code made unreadable (it runs as the
server's uid then) gets its owner's rights back instead of hiding files or failing the operation.
"""

from __future__ import annotations

import asyncio
import errno
import mimetypes
import os
import secrets
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from .types import FileInfo, InvalidFileName, QuotaExceeded

MAX_COMPONENT_BYTES = 255
MAX_NAME_BYTES = 1024
MAX_ENTRIES = 10000  # entries looked at by a listing or a usage walk (the scratch quota's entry limit)
FILE_MODE, DIR_MODE = 0o600, 0o700
_TEMP_PREFIX = ".lci-upload-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block us


def check_name(name: object) -> str:
    """`name` if it is a usable relative file name, else `InvalidFileName` saying why.

    Relative and '/'-separated; no empty, `.` or `..` component; no NUL or other control character (they
    break listings and download headers); valid UTF-8; at most 255 bytes a component and 1024 in all.
    """
    if not isinstance(name, str):
        raise InvalidFileName(f"a file name must be text, not {type(name).__name__}")
    if not name:
        raise InvalidFileName("the file name is empty")
    shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "…"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFileName(f"file name {shown} is not valid Unicode (lone surrogate)") from None
    if name.startswith("/"):
        raise InvalidFileName(f"file name {shown} is absolute; names are relative to the session directory")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        kind = "a NUL byte" if "\0" in name else "a control character"
        raise InvalidFileName(f"file name {shown} holds {kind}")
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidFileName(f"file name {shown} is {len(encoded)} bytes long; at most {MAX_NAME_BYTES}")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            what = "an empty component ('//' or a trailing '/')" if not part else f"a {part!r} component"
            raise InvalidFileName(f"file name {shown} has {what}")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidFileName(f"file name {shown} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    return name


def media_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


# Operations -----------------------------------------------------------------------------------------------
def write(directory, name: str, data: bytes, owner: tuple[int, int] | None = None, *, uid: int | None = None,
          gid: int | None = None, quota_bytes: int | None = None) -> FileInfo:
    """Create or replace `name` with `data` atomically; intermediate directories are created.

    `uid`/`gid` (gid defaults to uid), or `owner` as (uid, gid), own what is created, so that the code,
    running as that user, can change and remove it. `quota_bytes` bounds the directory's disk usage after
    the write (`QuotaExceeded`, and nothing is left behind).
    """
    if owner is not None:
        uid, gid = owner
    name = check_name(name)
    data = bytes(data)
    parts = name.split("/")
    if quota_bytes is not None and _blocks(len(data)) > quota_bytes:
        raise QuotaExceeded(f"{name!r} is {len(data)} bytes; the session's disk quota is {quota_bytes} bytes")
    with _root(directory) as root:
        with _walk(root, name, parts[:-1], create=True, uid=uid, gid=gid) as parent:
            leaf = parts[-1]
            temp = _TEMP_PREFIX + secrets.token_hex(8)
            fd = _retry_denied(parent, lambda: os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=parent))
            renamed = False
            try:
                try:
                    if uid is not None:
                        os.fchown(fd, uid, uid if gid is None else gid)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    info = os.fstat(fd)
                finally:
                    os.close(fd)
                if quota_bytes is not None:
                    replaced = _existing_bytes(parent, leaf)
                    used = usage(root) - info.st_blocks * 512 - replaced  # usage() counts the temp file
                    if used + info.st_blocks * 512 > quota_bytes:
                        raise QuotaExceeded(f"writing {name!r} ({len(data)} bytes) would take the session past its "
                                            f"disk quota of {quota_bytes} bytes ({used} in use)")
                try:
                    os.rename(temp, leaf, src_dir_fd=parent, dst_dir_fd=parent)
                except IsADirectoryError:
                    raise InvalidFileName(f"{name!r} is a directory") from None
                except OSError as error:
                    if error.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise InvalidFileName(f"{name!r} is a directory") from None
                    raise
                renamed = True
            finally:
                if not renamed:
                    try:
                        os.unlink(temp, dir_fd=parent)
                    except OSError:
                        pass
    return FileInfo(name, info.st_size, info.st_mtime_ns / 1e9, media_type(name))


def read(directory, name: str, *, max_bytes: int | None = None, uid: int | None = None) -> bytes:
    """The bytes of regular file `name`. A symlink, FIFO, device or directory is refused, not followed.

    `max_bytes` refuses a larger file (`QuotaExceeded`). With `uid`, a file owned by anyone else (a hard link
    the code made to a file outside) is refused too.
    """
    name = check_name(name)
    with _opened_file(directory, name) as fd:
        info = os.fstat(fd)
        if uid is not None and info.st_uid not in (uid, os.geteuid()):
            raise InvalidFileName(f"{name!r} belongs to another user (uid {info.st_uid}); it is not read")
        if max_bytes is not None and info.st_size > max_bytes:
            raise QuotaExceeded(f"{name!r} is {info.st_size} bytes; at most {max_bytes} can be read")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:  # it grew while we read
                raise QuotaExceeded(f"{name!r} is larger than {max_bytes} bytes")
        return b"".join(chunks)


def open_file(directory, name: str) -> OpenedFile:
    """Regular file `name`, opened for a download (the same refusals as `read`); the caller closes it."""
    name = check_name(name)
    parts = name.split("/")
    with _root(directory) as root, _walk(root, name, parts[:-1], create=False) as parent:
        fd = _open_leaf(parent, name, parts[-1])
    try:
        size = os.fstat(fd).st_size
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd, size)


class OpenedFile:
    """A file of a session directory, open for a download: its size when it was opened, and its bytes a piece at a
    time, each read in a worker thread, so a download holds one piece in memory however large the file is.

    The session's code may change the file meanwhile: `read` gives at most `size` bytes in all, fewer if the file
    shrank. `close` may come while a read is in flight (the download was cancelled): the descriptor is then closed
    when that read returns, never under it, where its number could already name another file.
    """

    def __init__(self, fd: int, size: int):
        self.size, self._fd, self._left = size, fd, size
        self._reading: Future | None = None

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes more; b"" at the end (the size it had when opened) or once closed."""
        if self._fd < 0 or self._left <= 0:
            return b""
        self._reading = _readers().submit(os.read, self._fd, min(limit, self._left))
        chunk = await asyncio.wrap_future(self._reading)
        self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._reading is not None and not self._reading.done():
            self._reading.add_done_callback(lambda _: os.close(fd))
        else:
            os.close(fd)


_READERS: ThreadPoolExecutor | None = None


def _readers() -> ThreadPoolExecutor:
    """The downloads' reading threads: a few, made on the first download."""
    global _READERS
    if _READERS is None:
        _READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="download")
    return _READERS


def stat_file(directory, name: str) -> FileInfo:
    """The `FileInfo` of regular file `name` (the same refusals as `read`)."""
    name = check_name(name)
    with _opened_file(directory, name) as fd:
        info = os.fstat(fd)
    return FileInfo(name, info.st_size, info.st_mtime_ns / 1e9, media_type(name))


def delete(directory, name: str) -> None:
    """Remove file `name` (a symlink is removed itself, its target untouched). A directory is refused."""
    name = check_name(name)
    parts = name.split("/")
    with _root(directory) as root, _walk(root, name, parts[:-1], create=False) as parent:
        leaf = parts[-1]
        try:
            info = _retry_denied(parent, lambda: os.stat(leaf, dir_fd=parent, follow_symlinks=False))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no file {name!r} in the session directory") from None
        if stat.S_ISDIR(info.st_mode):
            raise InvalidFileName(f"{name!r} is a directory; only files can be deleted")
        try:
            _retry_denied(parent, lambda: os.unlink(leaf, dir_fd=parent))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no file {name!r} in the session directory") from None


def listing(directory, *, limit: int = MAX_ENTRIES) -> list[FileInfo]:
    """Every regular file below the directory (symlinks and special files left out), sorted by name."""
    found = [FileInfo(path, info.st_size, info.st_mtime_ns / 1e9, media_type(path))
             for path, info in _entries(directory, limit) if stat.S_ISREG(info.st_mode)]
    return sorted(found, key=lambda item: item.name)


def usage(directory, *, limit: int = MAX_ENTRIES) -> int:
    """Bytes on disk (allocated blocks) of everything below the directory."""
    return sum(info.st_blocks * 512 for _, info in _entries(directory, limit))


def count(directory, *, limit: int = MAX_ENTRIES) -> int:
    """Entries below the directory (at most `limit` + 1 are looked at)."""
    return sum(1 for _ in _entries(directory, limit + 1))


# Descriptor-relative walking ------------------------------------------------------------------------------
@contextmanager
def _opened_file(directory, name: str) -> Iterator[int]:
    """A descriptor of regular file `name` (already through `check_name`), closed on exit; the refusals of `read`."""
    parts = name.split("/")
    with _root(directory) as root, _walk(root, name, parts[:-1], create=False) as parent:
        fd = _open_leaf(parent, name, parts[-1])
        try:
            yield fd
        finally:
            os.close(fd)


@contextmanager
def _root(directory) -> Iterator[int]:
    if isinstance(directory, int):
        yield directory
        return
    path = os.fspath(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        _restore_owner_rights(path)  # the code ran `chmod 000 .` (server not root: it owns it)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _walk(root: int, name: str, parts: list[str], *, create: bool, uid: int | None = None,
          gid: int | None = None) -> Iterator[int]:
    """A descriptor of the directory `parts` below `root`, each component opened with O_NOFOLLOW."""
    current, opened = root, []
    try:
        for depth, part in enumerate(parts):
            current = _open_dir(current, name, "/".join(parts[:depth + 1]), part, create, uid, gid)
            opened.append(current)
        yield current
    finally:
        for fd in opened:
            os.close(fd)


def _open_dir(parent: int, name: str, shown: str, part: str, create: bool, uid: int | None, gid: int | None) -> int:
    try:
        return _retry_denied(parent, lambda: os.open(part, _DIR_FLAGS, dir_fd=parent), part)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(errno.ENOENT, f"no file {name!r} in the session directory") from None
    except OSError as error:
        _refuse(error, parent, name, shown, part)
    try:
        _retry_denied(parent, lambda: os.mkdir(part, DIR_MODE, dir_fd=parent))
    except FileExistsError:
        pass  # made meanwhile: opened (and checked) below
    try:
        fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        _refuse(error, parent, name, shown, part)
    if uid is not None:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and os.geteuid() != uid:
            os.fchown(fd, uid, uid if gid is None else gid)
    return fd


def _open_leaf(parent: int, name: str, leaf: str) -> int:
    try:
        fd = _retry_denied(parent, lambda: os.open(leaf, _READ_FLAGS, dir_fd=parent), leaf)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no file {name!r} in the session directory") from None
    except OSError as error:
        _refuse(error, parent, name, name, leaf)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        raise InvalidFileName(f"{name!r} is {kind}")
    return fd


def _refuse(error: OSError, parent: int, name: str, shown: str, part: str):
    """Turn the failure to open a component into the error the caller should see."""
    try:
        info = os.stat(part, dir_fd=parent, follow_symlinks=False)
    except OSError:
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise InvalidFileName(f"{name!r}: {shown!r} is a symbolic link; links are never followed") from None
    if error.errno == errno.ENOTDIR:
        raise InvalidFileName(f"{name!r}: {shown!r} is not a directory") from None
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise InvalidFileName(f"{name!r}: {shown!r} is not a regular file or directory") from None
    raise error


def _retry_denied(parent: int, operation, part: str | None = None):
    """Run `operation`; on EACCES give the owner back its rights on `parent` (and on `part` in it) and retry.

    Only when the server is not root can this happen, and then the code runs as the server's own uid: what
    it locked is ours to unlock.
    """
    try:
        return operation()
    except PermissionError:
        if os.geteuid() == 0:
            raise
    _add_owner_rights(parent)
    if part is not None:
        try:
            target = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError:
            target = -1
        if target >= 0:
            try:
                mode = os.fstat(target).st_mode
                if (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and os.stat(target).st_uid == os.geteuid():
                    wanted = mode | (stat.S_IRWXU if stat.S_ISDIR(mode) else stat.S_IRUSR | stat.S_IWUSR)
                    os.chmod(f"/proc/self/fd/{target}", stat.S_IMODE(wanted))  # the inode we hold, no path
            finally:
                os.close(target)
    return operation()


def _add_owner_rights(fd: int) -> None:
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & stat.S_IRWXU != stat.S_IRWXU:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) | stat.S_IRWXU)


def _restore_owner_rights(path: str) -> None:
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if os.stat(fd).st_uid == os.geteuid():
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(os.stat(fd).st_mode) | stat.S_IRWXU)
    finally:
        os.close(fd)


def _entries(directory, limit: int) -> Iterator[tuple[str, os.stat_result]]:
    """(relative name, lstat) of every entry below the directory, depth first, at most `limit` of them."""
    with _root(directory) as root:
        seen = 0
        pending: list[tuple[int, str, bool]] = [(root, "", False)]  # (fd, prefix, ours to close)
        try:
            while pending:
                fd, prefix, owned = pending.pop()
                try:
                    names = _list(fd)
                    for entry in names:
                        try:
                            info = _retry_denied(fd, lambda: os.stat(entry, dir_fd=fd, follow_symlinks=False))
                        except FileNotFoundError:
                            continue
                        seen += 1
                        if seen > limit:
                            return
                        yield prefix + entry, info
                        if stat.S_ISDIR(info.st_mode):
                            try:
                                child = _retry_denied(fd, lambda: os.open(entry, _DIR_FLAGS, dir_fd=fd), entry)
                            except OSError:
                                continue  # replaced by a link or removed meanwhile, or not ours to open
                            pending.append((child, prefix + entry + "/", True))
                finally:
                    if owned:
                        os.close(fd)
        finally:
            for fd, _, owned in pending:
                if owned:
                    os.close(fd)


def _list(fd: int) -> list[str]:
    """Names in the directory open at `fd` (os.listdir rewinds it, so it can be listed again)."""
    return os.listdir(fd)


def _existing_bytes(parent: int, leaf: str) -> int:
    try:
        return _retry_denied(parent, lambda: os.stat(leaf, dir_fd=parent, follow_symlinks=False)).st_blocks * 512
    except OSError:
        return 0


def _blocks(size: int) -> int:
    return -(-size // 4096) * 4096
