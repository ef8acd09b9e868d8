"""Durable writes: whole file or no file, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trailerlink_common.durable import AtomicFile, remove_partials, write_durably


def test_write_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "obj.bin"
    write_durably(target, b"first")
    write_durably(target, [b"sec", b"ond"])
    assert target.read_bytes() == b"second"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)


def test_exception_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "obj.bin"
    with pytest.raises(RuntimeError), AtomicFile(target) as f:
        f.write(b"half")
        raise RuntimeError("receiver vanished")
    assert list(tmp_path.iterdir()) == []


def test_no_overwrite_mode_refuses_to_replace(tmp_path: Path) -> None:
    target = tmp_path / "obj.bin"
    write_durably(target, b"original")
    with pytest.raises(FileExistsError), AtomicFile(target, overwrite=False) as f:
        f.write(b"other")
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["obj.bin"]


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path: Path) -> None:
    # What a kill -9 between write and rename leaves behind.
    (tmp_path / "a").mkdir()
    leftover = tmp_path / "a" / ".obj.bin.x1y2.partial"
    leftover.write_bytes(b"half")
    keep = tmp_path / "a" / "done.bin"
    keep.write_bytes(b"whole")
    assert remove_partials(tmp_path) == 1
    assert not leftover.exists() and keep.exists()


def test_data_is_on_disk_when_the_call_returns(tmp_path: Path) -> None:
    target = tmp_path / "obj.bin"
    write_durably(target, os.urandom(1 << 20))
    # Reading through a fresh descriptor sees the full size immediately.
    fd = os.open(target, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)
