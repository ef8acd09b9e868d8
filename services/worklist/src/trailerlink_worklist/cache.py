"""The local cache: SQLite file of this site's scheduled steps, MPPS and outbound queue.

It is the source of every C-FIND answer, so the modality is served while the link is
down. One file, WAL mode, ``synchronous=FULL``: when a method that writes returns, what
it wrote survives a power cut.

Patient data is encrypted at rest (``atrest.py``, AES-256-GCM, each value bound to its
row): a step's data, MPPS attributes, corrections' fields and outbox payloads. In the
clear are only what rows are found and ordered by — step keys (accession number and SPS
ID), scheduled dates, statuses, MPPS and correction ids, event keys — and a keyed
fingerprint of each step. A cache written before encryption is encrypted in place, in
one transaction, when it is first opened with a key.

Events to publish are written in the same transaction as the change they describe (an
outbox), so a change is never made without its event nor announced without being made.

Thread-safe: pynetdicom handlers call it from association threads, the asyncio side
from the event loop (writes through ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trailerlink_common.sqlite import open_durable_sqlite

from trailerlink_worklist.atrest import CacheKeyError, FieldCipher
from trailerlink_worklist.matching import Record, compile_record
from trailerlink_worklist.model import ScheduledStep, Source, StepStatus, to_dataset

log = logging.getLogger(__name__)

# The meta row naming the key the patient fields are sealed with (its id, not the key).
KEY_ID_META = "at_rest_key_id"
# Sealed columns ("table.column"); the associated data of each names its row.
STEP_DATA = "steps.data"
MPPS_CREATE = "mpps.create_attrs"
MPPS_FINAL = "mpps.final_attrs"
CORRECTION_FIELDS = "corrections.fields"
OUTBOX_PAYLOAD = "outbox.payload"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    scheduled_date TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_date ON steps (scheduled_date);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mpps (
    uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    step_key TEXT NOT NULL,
    scheduled_date TEXT NOT NULL,
    create_attrs TEXT NOT NULL,
    final_attrs TEXT NOT NULL,
    upstream_state TEXT NOT NULL DEFAULT 'none',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    correction_id TEXT PRIMARY KEY,
    step_key TEXT NOT NULL,
    scheduled_date TEXT NOT NULL,
    fields TEXT NOT NULL,
    corrected_by TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hl7_seen (
    control_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class CachedStep:
    step: ScheduledStep
    status: StepStatus
    source: Source
    updated_at: float


@dataclass(frozen=True)
class OutboxItem:
    id: int
    topic: str
    key: str
    payload: bytes
    created_at: float = 0.0


class Cache:
    """The worklist's SQLite file; patient fields sealed with ``cipher``.

    Raises :class:`CacheKeyError` if the file was written with another key.
    """

    def __init__(self, path: Path, cipher: FieldCipher) -> None:
        self.path = Path(path)
        self.cipher = cipher
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            # Demographics inside: readable by this service's user only.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        # Deleted rows (purged days, replaced values) are zeroed, not left in free pages;
        # temporary tables and indices stay in memory, never in a file.
        self._conn = open_durable_sqlite(
            self.path,
            synchronous="FULL",
            busy_timeout_seconds=30,
            extra_pragmas=("secure_delete=ON", "temp_store=MEMORY"),
        )
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._generation = 0
        # The steps table changes far less often than the file (every upstream poll,
        # outbox flush and MPPS writes): C-FIND's compiled records follow the former.
        self._steps_generation = 0
        self._steps_dirty = False
        self._snapshot: tuple[int, list[Record]] | None = None
        self._compiled: dict[tuple[str, str, str], tuple[tuple[str, str, str], Record]] = {}
        try:
            self._encrypt_in_place()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- encryption at rest -------------------------------------------------------
    def _encrypt_in_place(self) -> None:
        """Check the file was sealed with our key; encrypt a plaintext one (a cache from
        before encryption, or a new file) in one transaction, then rewrite the file so
        no page of the old plaintext is left in it or in its WAL."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT value FROM meta WHERE name = ?", (KEY_ID_META,)).fetchall()
            if rows:
                if str(rows[0][0]) != self.cipher.key_id:
                    raise CacheKeyError(
                        f"TRAILERLINK_WORKLIST_KEY_FILE: the worklist cache {self.path} was "
                        f"encrypted with key {rows[0][0]}, but the key file holds key "
                        f"{self.cipher.key_id}. Mount the Secret the cache was made with; "
                        "or, to start afresh, move the cache aside (it is refilled from "
                        "upstream, but MPPS, corrections and events not yet delivered "
                        "are lost)"
                    )
                return
            if conn.execute(
                "SELECT 1 FROM steps WHERE typeof(data) = 'blob' UNION ALL"
                " SELECT 1 FROM mpps WHERE typeof(create_attrs) = 'blob' UNION ALL"
                " SELECT 1 FROM corrections WHERE typeof(fields) = 'blob' LIMIT 1"
            ).fetchall():
                raise CacheKeyError(
                    f"the worklist cache {self.path} holds encrypted rows "
                    "but no record of their key: refusing to use it"
                )
            counts = self._seal_plaintext(conn)
            self.set_meta(conn, KEY_ID_META, self.cipher.key_id)
        if any(counts.values()):
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.execute("VACUUM")
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            log.info(
                "encrypted the worklist cache's patient data in place",
                extra={**counts, "key_id": self.cipher.key_id, "checkpoint_busy": busy},
            )

    def _seal_plaintext(self, conn: sqlite3.Connection) -> dict[str, int]:
        c = self.cipher
        steps = conn.execute("SELECT key, data FROM steps").fetchall()
        conn.executemany(
            "UPDATE steps SET data = ?, content_hash = ? WHERE key = ?",
            [
                (c.seal_text(STEP_DATA, (key,), data), c.fingerprint(data), key)
                for key, data in steps
            ],
        )
        self._steps_dirty = self._steps_dirty or bool(steps)
        mpps = conn.execute("SELECT uid, step_key, create_attrs, final_attrs FROM mpps").fetchall()
        conn.executemany(
            "UPDATE mpps SET create_attrs = ?, final_attrs = ? WHERE uid = ?",
            [
                (
                    c.seal_text(MPPS_CREATE, (uid, key), create),
                    c.seal_text(MPPS_FINAL, (uid, key), final),
                    uid,
                )
                for uid, key, create, final in mpps
            ],
        )
        corrections = conn.execute(
            "SELECT correction_id, step_key, fields FROM corrections"
        ).fetchall()
        conn.executemany(
            "UPDATE corrections SET fields = ? WHERE correction_id = ?",
            [
                (c.seal_text(CORRECTION_FIELDS, (cid, key), fields), cid)
                for cid, key, fields in corrections
            ],
        )
        outbox = conn.execute("SELECT id, topic, key, payload FROM outbox").fetchall()
        conn.executemany(
            "UPDATE outbox SET payload = ? WHERE id = ?",
            [
                (c.seal(OUTBOX_PAYLOAD, (str(i), topic, key), bytes(payload)), i)
                for i, topic, key, payload in outbox
            ],
        )
        return {
            "steps": len(steps),
            "mpps": len(mpps),
            "corrections": len(corrections),
            "events": len(outbox),
        }

    # --- transactions -------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable write: everything inside commits together or not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._steps_dirty = False
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._steps_dirty = False
                raise
            self._conn.execute("COMMIT")
            self._generation += 1
            if self._steps_dirty:
                self._steps_generation += 1
                self._steps_dirty = False

    @property
    def generation(self) -> int:
        """Increases with every committed write."""
        return self._generation

    @property
    def steps_generation(self) -> int:
        """Increases with every committed write to the scheduled steps."""
        return self._steps_generation

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # --- steps ---------------------------------------------------------------------
    def get_step(self, key: str) -> CachedStep | None:
        rows = self._query(
            "SELECT key, data, status, source, updated_at FROM steps WHERE key = ?", (key,)
        )
        return self._cached(rows[0]) if rows else None

    def steps(self, date: str | None = None) -> list[CachedStep]:
        """Steps (of ``date``, or all), by scheduled date and time."""
        if date is None:
            rows = self._query("SELECT key, data, status, source, updated_at FROM steps")
        else:
            rows = self._query(
                "SELECT key, data, status, source, updated_at FROM steps WHERE scheduled_date = ?",
                (date,),
            )
        found = [self._cached(r) for r in rows]
        found.sort(key=lambda c: (c.step.scheduled_date, c.step.scheduled_time, c.step.key))
        return found

    def find_step(
        self, *, accession_number: str = "", sps_id: str = "", study_instance_uid: str = ""
    ) -> CachedStep | None:
        """The step an MPPS or a message refers to, by whatever identifiers it gave."""
        for cached in self.steps():
            s = cached.step
            if accession_number and sps_id:
                if (s.accession_number, s.scheduled_procedure_step_id) == (
                    accession_number,
                    sps_id,
                ):
                    return cached
            elif accession_number and s.accession_number == accession_number:
                return cached
        if study_instance_uid:
            for cached in self.steps():
                if cached.step.study_instance_uid == study_instance_uid:
                    return cached
        return None

    def put_step(
        self, conn: sqlite3.Connection, step: ScheduledStep, source: Source, status: StepStatus
    ) -> None:
        self._steps_dirty = True
        data = step.as_json()
        conn.execute(
            "INSERT INTO steps (key, source, scheduled_date, status, data, content_hash,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " source=excluded.source, scheduled_date=excluded.scheduled_date,"
            " status=excluded.status, data=excluded.data,"
            " content_hash=excluded.content_hash, updated_at=excluded.updated_at",
            (
                step.key,
                source.value,
                step.scheduled_date,
                status.value,
                self.cipher.seal_text(STEP_DATA, (step.key,), data),
                self.cipher.fingerprint(data),
                time.time(),
            ),
        )

    def delete_step(self, conn: sqlite3.Connection, key: str) -> None:
        self._steps_dirty = True
        conn.execute("DELETE FROM steps WHERE key = ?", (key,))

    def set_status(self, conn: sqlite3.Connection, key: str, status: StepStatus) -> None:
        self._steps_dirty = True
        conn.execute(
            "UPDATE steps SET status = ?, updated_at = ? WHERE key = ?",
            (status.value, time.time(), key),
        )

    def count_by_status(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) FROM steps GROUP BY status")
        return {str(s): int(n) for s, n in rows}  # type: ignore[call-overload]

    def snapshot(self) -> list[Record]:
        """Every step, compiled for matching, by scheduled date and time; rebuilt only
        after the steps changed, and then only the steps that changed are compiled."""
        with self._lock:
            generation = self._steps_generation
            if self._snapshot is not None and self._snapshot[0] == generation:
                return self._snapshot[1]
            rows = self._query("SELECT key, content_hash, status, data FROM steps")
            compiled: dict[tuple[str, str, str], tuple[tuple[str, str, str], Record]] = {}
            for key, content_hash, status, data in rows:
                ident = (str(key), str(content_hash), str(status))
                kept = self._compiled.get(ident)
                if kept is None:
                    step = ScheduledStep.from_json(
                        self.cipher.open_text(STEP_DATA, (ident[0],), data)
                    )
                    record = compile_record(to_dataset(step, StepStatus(ident[2])), step.key)
                    # The answers kept for a record are valid for this version only.
                    record.version = f"{ident[1]}:{ident[2]}"
                    kept = ((step.scheduled_date, step.scheduled_time, step.key), record)
                compiled[ident] = kept
            self._compiled = compiled
            records = [
                record for _order, record in sorted(compiled.values(), key=lambda kept: kept[0])
            ]
            self._snapshot = (generation, records)
            return records

    # --- outbox ----------------------------------------------------------------------
    def enqueue(self, conn: sqlite3.Connection, topic: str, key: str, payload: bytes) -> None:
        """Queue an event in ``conn``'s transaction; its payload is sealed to its row id,
        which exists only once the row does (hence the insert, then the payload)."""
        row_id = conn.execute(
            "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, x'', ?)",
            (topic, key, time.time()),
        ).lastrowid
        conn.execute(
            "UPDATE outbox SET payload = ? WHERE id = ?",
            (self.cipher.seal(OUTBOX_PAYLOAD, (str(row_id), topic, key), payload), row_id),
        )

    def outbox_batch(self, limit: int = 100) -> list[OutboxItem]:
        """The oldest ``limit`` events, payloads decrypted. Raises ``IntegrityError`` if
        a payload was altered or moved."""
        rows = self._query(
            "SELECT id, topic, key, payload, created_at FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        # Columns come back as object: id is an INTEGER, payload a BLOB.
        return [
            OutboxItem(
                int(i),  # type: ignore[call-overload]
                str(t),
                str(k),
                self.cipher.open(OUTBOX_PAYLOAD, (str(i), str(t), str(k)), bytes(p)),  # type: ignore[call-overload]
                float(c),  # type: ignore[arg-type]
            )
            for i, t, k, p, c in rows
        ]

    # --- sealed columns of the MPPS and corrections tables -----------------------------
    def seal_text(self, field: str, row: tuple[str, ...], text: str) -> bytes:
        """``text`` sealed for column ``field`` of the row keyed ``row``."""
        return self.cipher.seal_text(field, row, text)

    def open_text(self, field: str, row: tuple[str, ...], sealed: object) -> str:
        """The text of a sealed column; raises ``IntegrityError`` if it is not that
        row's."""
        return self.cipher.open_text(field, row, sealed)

    def outbox_done(self, ids: list[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def outbox_size(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM outbox")[0][0])  # type: ignore[call-overload]

    # --- meta ------------------------------------------------------------------------
    def set_meta(self, conn: sqlite3.Connection, name: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
            " SET value = excluded.value",
            (name, value),
        )

    def get_meta(self, name: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    # --- operators' audit trail (no patient data in it) ---------------------------------
    def audit(self, actor: str, action: str, detail: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO admin_audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (time.time(), actor, action, detail),
            )

    def audit_records(self, limit: int = 100) -> list[dict[str, object]]:
        """The newest ``limit`` records, newest first."""
        rows = self._query(
            "SELECT at, actor, action, detail FROM admin_audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {"at": at, "actor": actor, "action": action, "detail": detail}
            for at, actor, action, detail in rows
        ]

    # --- HL7 duplicates ----------------------------------------------------------------
    def hl7_seen(self, control_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM hl7_seen WHERE control_id = ?", (control_id,)))

    def mark_hl7_seen(self, conn: sqlite3.Connection, control_id: str) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO hl7_seen (control_id, received_at) VALUES (?, ?)",
            (control_id, time.time()),
        )

    # --- retention -----------------------------------------------------------------------
    def purge_before(self, date: str, keep_seconds: float = 7 * 86400) -> int:
        """Delete steps, MPPS and corrections of days before ``date`` (YYYYMMDD), and
        duplicate-detection entries older than ``keep_seconds``; returns steps removed.
        MPPS and corrections not yet delivered upstream are kept."""
        with self.transaction() as conn:
            removed = conn.execute("DELETE FROM steps WHERE scheduled_date < ?", (date,)).rowcount
            self._steps_dirty = self._steps_dirty or removed > 0
            conn.execute(
                "DELETE FROM mpps WHERE scheduled_date < ? AND upstream_state IN"
                " ('final', 'not_forwarded')",
                (date,),
            )
            conn.execute("DELETE FROM corrections WHERE scheduled_date < ?", (date,))
            conn.execute(
                "DELETE FROM hl7_seen WHERE received_at < ?", (time.time() - keep_seconds,)
            )
        return int(removed)

    def _cached(self, row: tuple[object, ...]) -> CachedStep:
        key, data, status, source, updated_at = row
        step = ScheduledStep.from_json(self.cipher.open_text(STEP_DATA, (str(key),), data))
        return CachedStep(step, StepStatus(str(status)), Source(str(source)), float(updated_at))  # type: ignore[arg-type]
