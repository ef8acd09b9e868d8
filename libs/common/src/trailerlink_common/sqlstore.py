"""One SQL code path on two databases: SQLite (a file; one replica) or PostgreSQL (a
``postgresql://`` DSN; what several replicas share).

A store subclasses :class:`SqlStore` and writes its SQL once, with ``?`` placeholders
(:meth:`SqlStore._sql` turns them into psycopg's ``%s``) and portable statements
(``INSERT ... ON CONFLICT``, ``DOUBLE PRECISION``). The differences live here: how a
connection is opened (one per thread), how a write transaction takes its lock
(``BEGIN IMMEDIATE`` vs a PostgreSQL advisory transaction lock per key) and how a lost
PostgreSQL connection becomes :attr:`SqlStore.unavailable` (retry later) instead of a
crash. psycopg is imported only when a DSN is used. All methods block: call them from a
thread.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trailerlink_common.sqlite import open_durable_sqlite


class DatabaseUnavailable(Exception):
    """The database does not answer (PostgreSQL down); retry later."""


class SqlStore:
    """Connections and transactions for SQLite (``sqlite_path``) or PostgreSQL (``dsn``)."""

    #: raised when PostgreSQL is unreachable or fails mid-transaction (a subclass of
    #: :class:`DatabaseUnavailable` a store names as its own)
    unavailable: type[DatabaseUnavailable] = DatabaseUnavailable

    def __init__(
        self, *, dsn: str = "", sqlite_path: Path | None = None, sqlite_synchronous: str = "FULL"
    ) -> None:
        if not dsn and sqlite_path is None:
            raise ValueError(f"{type(self).__name__} needs a PostgreSQL DSN or an SQLite path")
        self.dsn = dsn
        self.sqlite_path = sqlite_path
        self.sqlite_synchronous = sqlite_synchronous
        self.postgres = bool(dsn)
        self._local = threading.local()
        self._opened: list[Any] = []  # every thread's connection, for close()
        self._opened_lock = threading.Lock()

    # --- connections ----------------------------------------------------------------
    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            try:
                return psycopg.connect(self.dsn, connect_timeout=5, autocommit=False)
            except psycopg.OperationalError as exc:
                raise self.unavailable(f"PostgreSQL not reachable: {type(exc).__name__}") from None
        assert self.sqlite_path is not None
        # Each connection stays with the thread that opened it; close() may run elsewhere
        # (the opener's check_same_thread=False).
        return open_durable_sqlite(
            self.sqlite_path, synchronous=self.sqlite_synchronous, busy_timeout_seconds=30
        )

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or (self.postgres and conn.closed):
            conn = self._connect()
            self._local.conn = conn
            with self._opened_lock:
                # Drop PostgreSQL connections closed after a failure before adding this one.
                self._opened = [c for c in self._opened if not getattr(c, "closed", False)]
                self._opened.append(conn)
        return conn

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    @contextmanager
    def _transaction(self, lock_key: str | None = None) -> Iterator[Any]:
        """A write transaction; ``lock_key`` serialises writers of the same key."""
        conn = self._conn()
        try:
            if self.postgres:
                cur = conn.cursor()
                if lock_key is not None:
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(lock_key.encode()),)
                    )
                yield cur
                conn.commit()
            else:
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
        except BaseException as exc:
            if self.postgres:
                self._reset_after(exc)
            raise

    def _reset_after(self, exc: BaseException) -> None:
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()
                self._local.conn = None
        if isinstance(exc, psycopg.OperationalError):
            self._local.conn = None
            raise self.unavailable(f"PostgreSQL failed: {type(exc).__name__}") from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._conn()
        try:
            cur = conn.cursor()
            cur.execute(self._sql(sql), params)
            rows = cur.fetchall()
            if self.postgres:
                conn.commit()
            return rows
        except Exception as exc:
            if self.postgres:
                self._reset_after(exc)
            raise

    def close(self) -> None:
        """Close every thread's connection (at shutdown: the store is not used after)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def check(self) -> None:
        """Raise if the database does not answer (readiness)."""
        self._read("SELECT 1")
