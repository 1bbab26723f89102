"""Bytes as a session's file opened for a download, for fake file stores (their `open_file`)."""

import os
import tempfile

from local_code_interpreter.sandbox import files


def opened(data: bytes) -> files.OpenedFile:
    """`data` in a file opened as `files.open_file` opens one; the file is removed at once (the descriptor keeps
    its bytes)."""
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "file"), "wb") as file:
            file.write(data)
        return files.open_file(directory, "file")
