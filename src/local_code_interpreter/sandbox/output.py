"""Output capping shared by back ends: keep the first N bytes of a stream, decode safely, say when cut."""

from __future__ import annotations

import time

from .types import ExecutionResult

TRUNCATION_NOTE = "\n[... output truncated at {limit} bytes]"


class CappedBuffer:
    """Collects at most `limit` bytes of one stream; everything past that is counted, not kept."""

    __slots__ = ("limit", "_parts", "_size", "truncated", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.truncated = False
        self.seen = 0  # every byte written, kept or not

    def write(self, data: bytes) -> None:
        self.seen += len(data)
        room = self.limit - self._size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self._parts.append(data)
            self._size += len(data)

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced), with the truncation note when cut."""
        text = b"".join(self._parts).decode("utf-8", "replace")
        if self.truncated:
            # A multi-byte character cut at the limit decodes to one U+FFFD; drop it.
            text = text.removesuffix("\ufffd") + TRUNCATION_NOTE.format(limit=self.limit)
        return text


def result(sandbox: str, stdout: CappedBuffer, stderr: CappedBuffer, exit_code: int, timed_out: bool,
           started: float) -> ExecutionResult:
    """The result of one execution from its two capped streams; `started` is a `time.perf_counter()` value."""
    return ExecutionResult(
        stdout=stdout.text(),
        stderr=stderr.text(),
        exit_code=exit_code,
        timed_out=timed_out,
        truncated=stdout.truncated or stderr.truncated,
        duration_ms=(time.perf_counter() - started) * 1000,
        sandbox=sandbox,
    )
