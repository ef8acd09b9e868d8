"""Durable file writes: after these functions return, the file survives power loss.

The pattern is the classic one: write a temporary file in the same directory, fsync
it, rename it over the final name, then fsync the directory so the rename itself is
on disk. A reader therefore sees either no file or the whole file, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

TEMP_SUFFIX = ".partial"


def fsync_dir(path: Path) -> None:
    """fsync a directory, making renames and creations inside it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file written in pieces that appears under ``path`` only when complete.

    Use as a context manager; leaving the block normally commits (fsync, rename,
    directory fsync), leaving it by an exception removes the temporary file::

        with AtomicFile(target) as f:
            for chunk in chunks:
                f.write(chunk)
        # here target is durable

    Temporary files end in ``.partial``; :func:`remove_partials` cleans up the ones a
    killed process left behind.
    """

    def __init__(self, path: Path, *, mode: int = 0o600, overwrite: bool = True) -> None:
        self.path = Path(path)
        self._mode = mode
        self._overwrite = overwrite
        self._file: BinaryIO | None = None
        self._tmp_name = ""

    def __enter__(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TEMP_SUFFIX
        )
        os.fchmod(fd, self._mode)
        self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._file is not None
        if exc_type is not None:
            self._file.close()
            Path(self._tmp_name).unlink(missing_ok=True)
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._overwrite:
                os.replace(self._tmp_name, self.path)
            else:
                # link() fails if the target exists: never replace a committed file.
                os.link(self._tmp_name, self.path)
                os.unlink(self._tmp_name)
            fsync_dir(self.path.parent)
        except BaseException:
            self._file.close()
            Path(self._tmp_name).unlink(missing_ok=True)
            raise


def write_durably(path: Path, data: bytes | Iterable[bytes], *, mode: int = 0o600) -> None:
    """Write ``data`` (bytes or an iterable of chunks) to ``path`` atomically and durably."""
    with AtomicFile(path, mode=mode) as f:
        if isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            for chunk in data:
                f.write(chunk)


def remove_partials(directory: Path) -> int:
    """Delete temporary files a killed writer left in ``directory`` (recursively).

    Returns how many were removed. Call at start-up, before serving.
    """
    removed = 0
    if not directory.exists():
        return 0
    for leftover in directory.rglob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
