"""SqlStore against a real PostgreSQL that goes away and comes back: the store says
"unavailable" (its own exception type), never hangs or crashes, and reconnects by itself;
the same store on SQLite keeps the placeholders and transactions it had."""

from __future__ import annotations

from pathlib import Path

import pytest
from trailerlink_common.sqlstore import DatabaseUnavailable, SqlStore
from trailerlink_testing.postgres import Postgres


class NotesUnavailable(DatabaseUnavailable):
    pass


class Notes(SqlStore):
    """A tiny store written once for both databases."""

    unavailable = NotesUnavailable

    def migrate(self) -> None:
        with self._transaction("notes-migrate") as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS notes (k TEXT PRIMARY KEY, v TEXT)")

    def put(self, key: str, value: str) -> None:
        with self._transaction(f"note:{key}") as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO notes VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                ),
                (key, value),
            )

    def get(self, key: str) -> str | None:
        rows = self._read("SELECT v FROM notes WHERE k = ?", (key,))
        return rows[0][0] if rows else None


def test_sqlite_rolls_back_a_failed_transaction(tmp_path: Path) -> None:
    notes = Notes(sqlite_path=tmp_path / "n.sqlite")
    notes.migrate()
    notes.put("a", "1")
    with pytest.raises(RuntimeError), notes._transaction() as cur:
        cur.execute("UPDATE notes SET v = '2' WHERE k = 'a'")
        raise RuntimeError("half way")
    assert notes.get("a") == "1"
    notes.close()


def test_postgresql_down_is_unavailable_and_back_is_used_again() -> None:
    with Postgres() as pg:
        notes = Notes(dsn=pg.dsn)
        notes.migrate()
        notes.put("a", "1")
        pg.stop("immediate")
        with pytest.raises(NotesUnavailable):
            notes.get("a")
        with pytest.raises(NotesUnavailable):
            notes.put("b", "2")
        with pytest.raises(NotesUnavailable):
            notes.check()
        pg.start()
        assert notes.get("a") == "1"  # a new connection, without being told
        notes.put("b", "2")
        assert notes.get("b") == "2"
        notes.close()


def test_a_store_needs_a_database() -> None:
    with pytest.raises(ValueError):
        Notes()
