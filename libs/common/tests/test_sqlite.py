"""The one opener of durable SQLite files: WAL, the synchronous level, the busy timeout."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from trailerlink_common.sqlite import SYNCHRONOUS_LEVELS, open_durable_sqlite

# PRAGMA synchronous reads back as a number.
_LEVEL_NUMBER = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_defaults_read_back(tmp_path: Path) -> None:
    conn = open_durable_sqlite(tmp_path / "a.db")
    try:
        assert _pragma(conn, "journal_mode") == "wal"
        assert _pragma(conn, "synchronous") == _LEVEL_NUMBER["FULL"]
        assert _pragma(conn, "busy_timeout") == 30_000
        assert conn.isolation_level is None
    finally:
        conn.close()


@pytest.mark.parametrize("level", [*SYNCHRONOUS_LEVELS, "normal"])
def test_synchronous_level_read_back(tmp_path: Path, level: str) -> None:
    conn = open_durable_sqlite(tmp_path / "a.db", synchronous=level)
    try:
        assert _pragma(conn, "synchronous") == _LEVEL_NUMBER[level.upper()]
    finally:
        conn.close()


@pytest.mark.parametrize("level", ["", "2", "FULLY", "FULL; DROP TABLE x", "FULL\n"])
def test_bad_synchronous_refused_before_anything_is_made(tmp_path: Path, level: str) -> None:
    path = tmp_path / "new" / "a.db"
    with pytest.raises(ValueError, match="synchronous"):
        open_durable_sqlite(path, synchronous=level)
    assert not path.parent.exists()


def test_parent_directory_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "a.db"
    conn = open_durable_sqlite(path)
    conn.close()
    assert path.is_file()


def test_busy_timeout_and_extra_pragmas(tmp_path: Path) -> None:
    conn = open_durable_sqlite(
        tmp_path / "a.db",
        busy_timeout_seconds=10,
        extra_pragmas=("foreign_keys=ON", "secure_delete=ON", "temp_store=MEMORY"),
    )
    try:
        assert _pragma(conn, "busy_timeout") == 10_000
        assert _pragma(conn, "foreign_keys") == 1
        assert _pragma(conn, "secure_delete") == 1
        assert _pragma(conn, "temp_store") == 2  # MEMORY
    finally:
        conn.close()


@pytest.mark.parametrize("pragma", ["foreign_keys", "foreign_keys=ON; DROP TABLE x", "a = b", ""])
def test_bad_extra_pragma_refused(tmp_path: Path, pragma: str) -> None:
    with pytest.raises(ValueError, match="pragma"):
        open_durable_sqlite(tmp_path / "a.db", extra_pragmas=(pragma,))
    assert not (tmp_path / "a.db").exists()


def test_usable_from_another_thread(tmp_path: Path) -> None:
    conn = open_durable_sqlite(tmp_path / "a.db")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (1)")  # autocommit: no transaction left open
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    try:
        assert errors == []
        assert not conn.in_transaction
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()
