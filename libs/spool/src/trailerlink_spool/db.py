"""One SQLite database file used durably from threads and the event loop.

WAL journal with ``synchronous=FULL``: when :meth:`Database.transaction` returns, the
transaction is on disk (the WAL is fsynced at commit). One connection guarded by a
lock keeps the writers of a process simple; every statement here is short.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trailerlink_common.sqlite import open_durable_sqlite


class Database:
    """A SQLite file opened for durable use by several threads of one process."""

    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = open_durable_sqlite(
            self.path,
            synchronous="FULL",
            busy_timeout_seconds=30,
            extra_pragmas=("foreign_keys=ON",),
        )
        self._conn.row_factory = sqlite3.Row
        if schema:
            # executescript manages its own transaction; the statements are idempotent.
            with self._lock:
                self._conn.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; durable when the block exits, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Run a read-only statement and return every row."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
