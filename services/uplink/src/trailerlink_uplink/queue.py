"""The durable send queue: every sealed object the uplink has taken responsibility for.

An ObjectSealed event is acknowledged to Kafka (offset committed) only after
:meth:`SendQueue.enqueue` returned, and that call returns only after the row is in
SQLite with ``synchronous=FULL`` (fsynced WAL). From then on the queue, not Kafka's
retention, keeps the object alive: a row leaves the ``queued``/``uploaded`` states only
when a receipt says it is in PACS (``delivered``) or failed for good (``failed``), and no
code path deletes a row. The janitor removes *files* of delivered rows after retention.

States::

    queued ──upload complete──▶ uploaded ──receipt ok──▶ delivered ──janitor──▶ (purged_at set)
       ▲                           │
       └──── receipt: corrupted ◀──┘──receipt: permanent failure──▶ failed (kept, alerted)

Ordering (what :meth:`next_object` hands out): urgent studies before routine ones, then
studies oldest first (by the first object's acquisition time), and a study's objects
before any object of a later study, so a reader gets whole studies.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from trailerlink_common.sqlite import open_durable_sqlite

STATE_QUEUED = "queued"
STATE_UPLOADED = "uploaded"
STATE_DELIVERED = "delivered"
STATE_FAILED = "failed"

PRIORITY_ROUTINE = 1
PRIORITY_URGENT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sealed_path         TEXT NOT NULL UNIQUE,
    sop_instance_uid    TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    file_sha256         TEXT NOT NULL,
    dataset_sha256      TEXT NOT NULL,
    sealed_sha256       TEXT NOT NULL,
    sealed_size         INTEGER NOT NULL,
    key_id              TEXT NOT NULL,
    codec               TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    received_at         REAL NOT NULL,
    sealed_at           REAL NOT NULL,
    enqueued_at         REAL NOT NULL,
    state               TEXT NOT NULL,
    upload_url          TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    uploaded_at         REAL,
    delivered_at        REAL,
    purged_at           REAL,
    failure             TEXT,
    traceparent         TEXT
);
CREATE INDEX IF NOT EXISTS objects_by_state ON objects (state);
CREATE INDEX IF NOT EXISTS objects_by_sop ON objects (sop_instance_uid, dataset_sha256);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid  TEXT PRIMARY KEY,
    priority            INTEGER NOT NULL,
    first_received_at   REAL NOT NULL,
    first_id            INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resend_prior (
    object_id           INTEGER PRIMARY KEY,
    state               TEXT NOT NULL,
    delivered_at        REAL,
    failure             TEXT
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class QueuedObject:
    """One row of the queue (UIDs, sizes, hashes; never patient data)."""

    id: int
    sealed_path: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_sha256: str
    dataset_sha256: str
    sealed_sha256: str
    sealed_size: int
    key_id: str
    codec: str
    priority: int
    received_at: float
    sealed_at: float
    enqueued_at: float
    state: str
    upload_url: str | None
    attempts: int
    uploaded_at: float | None
    delivered_at: float | None
    purged_at: float | None
    failure: str | None
    traceparent: str | None = None
    """W3C trace context of the image's trace: its upload and receipts continue it."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QueuedObject:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class NewObject:
    """What the ObjectSealed handler puts in the queue."""

    sealed_path: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_sha256: str
    dataset_sha256: str
    sealed_sha256: str
    sealed_size: int
    key_id: str
    codec: str
    priority: int
    received_at: float
    sealed_at: float
    traceparent: str = ""


@dataclass(frozen=True)
class Backlog:
    objects: int
    bytes: int
    oldest_received_at: float | None
    awaiting_receipt: int
    failed: int


class ResendRefused(Exception):
    """Why :meth:`SendQueue.resend_study` (or :meth:`SendQueue.cancel_resend`) changed
    nothing: ``kind`` is ``unknown``, ``purged``, ``busy`` or ``not_resent``; ``objects``
    are the rows that stand in the way."""

    def __init__(self, kind: str, message: str, objects: list[QueuedObject]) -> None:
        super().__init__(message)
        self.kind = kind
        self.objects = objects


class SendQueue:
    """The queue in one SQLite file. Thread-safe; every write is durable on return."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = open_durable_sqlite(self.path, synchronous="FULL", busy_timeout_seconds=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.executescript(_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(objects)")}
        if "traceparent" not in columns:  # a queue made before rows kept their trace
            self._conn.execute("ALTER TABLE objects ADD COLUMN traceparent TEXT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: Iterable[object] = ()) -> int:
        with self._lock:
            cur = self._conn.execute(sql, tuple(params))
            return cur.rowcount

    def _query(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, tuple(params)))

    # --- intake -----------------------------------------------------------------------
    def enqueue(self, obj: NewObject) -> bool:
        """Add a sealed object; durable when this returns. False if it was already queued
        (a redelivered event): the call is idempotent on the sealed path."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO objects (sealed_path, sop_instance_uid,"
                    " study_instance_uid, series_instance_uid, sop_class_uid,"
                    " transfer_syntax_uid, file_sha256, dataset_sha256, sealed_sha256,"
                    " sealed_size, key_id, codec, priority, received_at, sealed_at,"
                    " enqueued_at, state, traceparent)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        obj.sealed_path,
                        obj.sop_instance_uid,
                        obj.study_instance_uid,
                        obj.series_instance_uid,
                        obj.sop_class_uid,
                        obj.transfer_syntax_uid,
                        obj.file_sha256,
                        obj.dataset_sha256,
                        obj.sealed_sha256,
                        obj.sealed_size,
                        obj.key_id,
                        obj.codec,
                        obj.priority,
                        obj.received_at,
                        obj.sealed_at,
                        now,
                        STATE_QUEUED,
                        obj.traceparent or None,
                    ),
                )
                added = cur.rowcount == 1
                if added:
                    self._conn.execute(
                        "INSERT INTO studies (study_instance_uid, priority, first_received_at,"
                        " first_id) VALUES (?,?,?,?) ON CONFLICT(study_instance_uid) DO UPDATE"
                        " SET priority = MAX(priority, excluded.priority),"
                        " first_received_at = MIN(first_received_at, excluded.first_received_at)",
                        (obj.study_instance_uid, obj.priority, obj.received_at, cur.lastrowid),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return added

    # --- sending ----------------------------------------------------------------------
    def next_object(self, exclude: Iterable[int] = ()) -> QueuedObject | None:
        """The object to send next (see the module doc), skipping ids in ``exclude``
        (those in flight)."""
        excluded = list(exclude)
        marks = ",".join("?" for _ in excluded) or "-1"
        sql = (
            "SELECT o.* FROM objects o JOIN studies s USING (study_instance_uid)"  # noqa: S608
            " WHERE o.state = ? AND o.id NOT IN (" + marks + ")"  # only "?" placeholders
            " ORDER BY s.priority DESC, s.first_received_at, s.first_id,"
            " o.received_at, o.id LIMIT 1"
        )
        rows = self._query(sql, (STATE_QUEUED, *excluded))
        return QueuedObject.from_row(rows[0]) if rows else None

    def set_upload_url(self, object_id: int, url: str | None) -> None:
        """Remember (durably) the upload a restart must resume, or forget it."""
        self._write(
            "UPDATE objects SET upload_url = ?, attempts = attempts + ? WHERE id = ?",
            (url, 1 if url else 0, object_id),
        )

    def mark_uploaded(self, object_id: int) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "UPDATE objects SET state = ?, uploaded_at = ? WHERE id = ? AND state = ?",
                    (STATE_UPLOADED, time.time(), object_id, STATE_QUEUED),
                )
                if cur.rowcount:  # sent: a resend can no longer be taken back
                    self._conn.execute("DELETE FROM resend_prior WHERE object_id = ?", (object_id,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def get(self, object_id: int) -> QueuedObject | None:
        rows = self._query("SELECT * FROM objects WHERE id = ?", (object_id,))
        return QueuedObject.from_row(rows[0]) if rows else None

    # --- receipts ---------------------------------------------------------------------
    def find_sent(self, sop_instance_uid: str, dataset_sha256: str) -> list[QueuedObject]:
        """Rows a receipt may be about (any state: receipts can repeat)."""
        rows = self._query(
            "SELECT * FROM objects WHERE sop_instance_uid = ? AND dataset_sha256 = ? ORDER BY id",
            (sop_instance_uid, dataset_sha256),
        )
        return [QueuedObject.from_row(r) for r in rows]

    def mark_delivered(self, object_id: int, delivered_at: float | None = None) -> None:
        self._write(
            "UPDATE objects SET state = ?, delivered_at = COALESCE(delivered_at, ?), failure = NULL"
            " WHERE id = ?",
            (STATE_DELIVERED, delivered_at or time.time(), object_id),
        )

    def mark_failed(self, object_id: int, reason: str) -> None:
        self._write(
            "UPDATE objects SET state = ?, failure = ? WHERE id = ? AND state != ?",
            (STATE_FAILED, reason, object_id, STATE_DELIVERED),
        )

    def requeue(self, object_id: int, reason: str) -> None:
        """Send again from scratch (a fresh upload), e.g. after the ingest found the bytes
        corrupted in transit."""
        self._write(
            "UPDATE objects SET state = ?, upload_url = NULL, failure = ?"
            " WHERE id = ? AND state != ?",
            (STATE_QUEUED, reason, object_id, STATE_DELIVERED),
        )

    def find_study(self, study_instance_uid: str) -> list[QueuedObject]:
        """Every row of a study, in queue order."""
        rows = self._query(
            "SELECT * FROM objects WHERE study_instance_uid = ? ORDER BY id", (study_instance_uid,)
        )
        return [QueuedObject.from_row(r) for r in rows]

    def resend_study(self, study_instance_uid: str, reason: str) -> list[QueuedObject]:
        """Queue every object of a delivered (or failed) study again as fresh uploads,
        all or none, e.g. after a PACS restore (``trailerlinkctl resend``).

        Rows keep their identity (SOP UID, dataset SHA-256, key id, sealed path); their
        upload and delivery state is cleared, so the sender creates new uploads and the
        next receipt sets a new delivery time. Raises :class:`ResendRefused` and changes
        nothing when the study has no rows, any of its files were purged, or any object
        is still queued or awaiting its receipt.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = [
                    QueuedObject.from_row(r)
                    for r in self._conn.execute(
                        "SELECT * FROM objects WHERE study_instance_uid = ? ORDER BY id",
                        (study_instance_uid,),
                    )
                ]
                if not rows:
                    raise ResendRefused("unknown", "study not in this trailer's send queue", [])
                purged = [r for r in rows if r.purged_at is not None]
                if purged:
                    raise ResendRefused("purged", "files already deleted by the janitor", purged)
                busy = [r for r in rows if r.state in (STATE_QUEUED, STATE_UPLOADED)]
                if busy:
                    raise ResendRefused("busy", "objects still queued or awaiting a receipt", busy)
                # What a cancelled resend puts back (the latest resend's, if repeated).
                self._conn.execute(
                    "INSERT OR REPLACE INTO resend_prior (object_id, state, delivered_at,"
                    " failure) SELECT id, state, delivered_at, failure FROM objects"
                    " WHERE study_instance_uid = ?",
                    (study_instance_uid,),
                )
                self._conn.execute(
                    "UPDATE objects SET state = ?, upload_url = NULL, attempts = 0,"
                    " uploaded_at = NULL, delivered_at = NULL, failure = ?"
                    " WHERE study_instance_uid = ?",
                    (STATE_QUEUED, f"resend: {reason}"[:500], study_instance_uid),
                )
                rows = [
                    QueuedObject.from_row(r)
                    for r in self._conn.execute(
                        "SELECT * FROM objects WHERE study_instance_uid = ? ORDER BY id",
                        (study_instance_uid,),
                    )
                ]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return rows

    def cancel_resend(
        self, study_instance_uid: str, reason: str
    ) -> tuple[list[QueuedObject], list[QueuedObject]]:
        """Take back a resend: every object of the study still queued by it returns to
        the state it had before (delivered with its old delivery time, or failed).
        Returns (cancelled rows, rows already sent that will still get their receipt).
        Raises :class:`ResendRefused` (``unknown``, ``not_resent``) changing nothing.

        An object whose upload a worker is sending at this moment may still arrive: the
        ingest stores a duplicate once (harmless) and its receipt marks it delivered."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = [
                    QueuedObject.from_row(r)
                    for r in self._conn.execute(
                        "SELECT * FROM objects WHERE study_instance_uid = ? ORDER BY id",
                        (study_instance_uid,),
                    )
                ]
                if not rows:
                    raise ResendRefused("unknown", "study not in this trailer's send queue", [])
                prior = {
                    int(r["object_id"]): r
                    for r in self._conn.execute(
                        "SELECT * FROM resend_prior WHERE object_id IN (SELECT id FROM objects"
                        " WHERE study_instance_uid = ?)",
                        (study_instance_uid,),
                    )
                }
                taking = [r for r in rows if r.state == STATE_QUEUED and r.id in prior]
                sent = [r for r in rows if r.state == STATE_UPLOADED]
                if not taking:
                    raise ResendRefused(
                        "not_resent", "no object of the study is waiting to be sent again", sent
                    )
                for row in taking:
                    before = prior[row.id]
                    self._conn.execute(
                        "UPDATE objects SET state = ?, delivered_at = ?, upload_url = NULL,"
                        " failure = ? WHERE id = ? AND state = ?",
                        (
                            before["state"],
                            before["delivered_at"],
                            (before["failure"] or f"resend cancelled: {reason}")[:500],
                            row.id,
                            STATE_QUEUED,
                        ),
                    )
                    self._conn.execute("DELETE FROM resend_prior WHERE object_id = ?", (row.id,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return taking, sent

    def get_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_value(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
            " SET value = excluded.value",
            (key, value),
        )

    # --- janitor and metrics ----------------------------------------------------------
    def delivered_unpurged(self, delivered_before: float | None = None) -> list[QueuedObject]:
        """Delivered rows whose files are still on disk, oldest delivery first."""
        limit = delivered_before if delivered_before is not None else float("inf")
        rows = self._query(
            "SELECT * FROM objects WHERE state = ? AND purged_at IS NULL AND delivered_at <= ?"
            " ORDER BY delivered_at, id",
            (STATE_DELIVERED, limit),
        )
        return [QueuedObject.from_row(r) for r in rows]

    def mark_purged(self, object_id: int) -> None:
        self._write(
            "UPDATE objects SET purged_at = ? WHERE id = ? AND state = ?",
            (time.time(), object_id, STATE_DELIVERED),
        )

    def backlog(self) -> Backlog:
        ((objects, size, oldest),) = self._query(
            "SELECT COUNT(*), COALESCE(SUM(sealed_size), 0), MIN(received_at) FROM objects"
            " WHERE state = ?",
            (STATE_QUEUED,),
        )
        ((awaiting,),) = self._query(
            "SELECT COUNT(*) FROM objects WHERE state = ?", (STATE_UPLOADED,)
        )
        ((failed,),) = self._query("SELECT COUNT(*) FROM objects WHERE state = ?", (STATE_FAILED,))
        return Backlog(int(objects), int(size), oldest, int(awaiting), int(failed))

    def oldest_awaiting_receipt(self) -> float | None:
        """When the longest-waiting uploaded object finished uploading."""
        ((oldest,),) = self._query(
            "SELECT MIN(uploaded_at) FROM objects WHERE state = ?", (STATE_UPLOADED,)
        )
        return oldest

    def unsent_by_key(self) -> dict[str, int]:
        """Objects queued or awaiting a receipt, per sealing key id (what the ingest must
        keep a private key for; see keysync)."""
        rows = self._query(
            "SELECT key_id, COUNT(*) AS n FROM objects WHERE state IN (?, ?) GROUP BY key_id",
            (STATE_QUEUED, STATE_UPLOADED),
        )
        return {str(r["key_id"]): int(r["n"]) for r in rows}

    def resendable_by_key(self) -> dict[str, int]:
        """Objects a resend could queue again (delivered with their files still here, or
        failed), per sealing key id: what retiring that key would make unresendable."""
        rows = self._query(
            "SELECT key_id, COUNT(*) AS n FROM objects WHERE (state = ? AND purged_at IS NULL)"
            " OR state = ? GROUP BY key_id",
            (STATE_DELIVERED, STATE_FAILED),
        )
        return {str(r["key_id"]): int(r["n"]) for r in rows}

    def states(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._query("SELECT state, COUNT(*) FROM objects GROUP BY state")
        }
