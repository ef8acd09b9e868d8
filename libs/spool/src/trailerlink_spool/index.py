"""The spool index: every object copy the gateway acknowledged, durably recorded.

A row is written only after the encrypted file is durable, and in the same SQLite
transaction as the outbox event that announces it, so after any crash either both the
row and its event exist or neither does (an encrypted file without a row is an
orphan from an unacknowledged store and :meth:`SpoolIndex.orphans` finds it).

Copies of one SOP Instance UID: a copy with the SHA-256 of an existing copy is a
*duplicate* (not recorded again); a copy with different bytes is a *conflict*: it is
recorded (both copies are kept) with status ``conflict``.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from trailerlink_spool.db import Database
from trailerlink_spool.layout import SpoolLayout
from trailerlink_spool.outbox import OUTBOX_SCHEMA, Outbox, OutboxEvent

STATUS_RECEIVED = "received"
STATUS_CONFLICT = "conflict"
STATUS_PURGED = "purged"
"""The file was deleted after delivery and retention; the row stays as the record that
the object was received (and so a later re-send of the same bytes is a duplicate)."""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS objects (
    receipt_id          TEXT PRIMARY KEY,
    sop_instance_uid    TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae_title    TEXT NOT NULL,
    file_size           INTEGER NOT NULL,
    file_sha256         TEXT NOT NULL,
    dataset_size        INTEGER NOT NULL,
    dataset_sha256      TEXT NOT NULL,
    stored_size         INTEGER NOT NULL,
    spool_path          TEXT NOT NULL UNIQUE,
    key_id              TEXT NOT NULL,
    received_at         REAL NOT NULL,
    number_of_frames    INTEGER NOT NULL,
    status              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_sop ON objects (sop_instance_uid, received_at);
"""
    + OUTBOX_SCHEMA
)


@dataclass(frozen=True)
class SpoolEntry:
    """One received copy of an object (UIDs, sizes, hashes; never patient data)."""

    receipt_id: str
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    file_size: int
    file_sha256: str
    dataset_size: int
    dataset_sha256: str
    stored_size: int
    spool_path: str
    key_id: str
    received_at: float
    number_of_frames: int
    status: str = STATUS_RECEIVED

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SpoolEntry:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


class RecordOutcome(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Recorded:
    """What :meth:`SpoolIndex.record` did."""

    outcome: RecordOutcome
    entry: SpoolEntry
    """The recorded copy, or for a duplicate the existing copy it duplicates."""
    outbox_seqs: tuple[int, ...]
    """Outbox sequence numbers of the events committed with it."""


EventsFor = Callable[[RecordOutcome, SpoolEntry, Sequence[SpoolEntry]], list[OutboxEvent]]
"""Builds the events for a recorded copy: (outcome, new copy, earlier copies)."""


class SpoolIndex:
    """The spool's SQLite index and outbox (``<spool root>/index.sqlite``)."""

    def __init__(self, layout: SpoolLayout, db: Database | None = None) -> None:
        self.layout = layout
        self.db = db or Database(layout.index_path, SCHEMA)
        self.outbox = Outbox(self.db)

    def record(self, entry: SpoolEntry, events_for: EventsFor) -> Recorded:
        """Record a durable copy and its events in one durable transaction.

        A duplicate (same SOP Instance UID and dataset SHA-256 as a recorded copy)
        is not recorded and gets no events: the caller removes its file.
        """
        with self.db.transaction() as conn:
            earlier = [
                SpoolEntry.from_row(r)
                for r in conn.execute(
                    "SELECT * FROM objects WHERE sop_instance_uid = ? ORDER BY received_at",
                    (entry.sop_instance_uid,),
                )
            ]
            same = [e for e in earlier if e.dataset_sha256 == entry.dataset_sha256]
            if same:
                return Recorded(RecordOutcome.DUPLICATE, same[0], ())
            outcome = RecordOutcome.CONFLICT if earlier else RecordOutcome.NEW
            if outcome is RecordOutcome.CONFLICT:
                entry = SpoolEntry(**{**asdict(entry), "status": STATUS_CONFLICT})
            row = asdict(entry)
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"INSERT INTO objects ({columns}) VALUES ({marks})",  # noqa: S608
                tuple(row.values()),
            )
            seqs = tuple(self.outbox.add(conn, ev) for ev in events_for(outcome, entry, earlier))
        return Recorded(outcome, entry, seqs)

    def copies(self, sop_instance_uid: str) -> list[SpoolEntry]:
        """Every recorded copy of a SOP Instance UID, oldest first."""
        rows = self.db.query(
            "SELECT * FROM objects WHERE sop_instance_uid = ? ORDER BY received_at",
            (sop_instance_uid,),
        )
        return [SpoolEntry.from_row(r) for r in rows]

    def study(self, study_instance_uid: str) -> list[SpoolEntry]:
        """Every recorded copy of a study's objects (any status), oldest first."""
        rows = self.db.query(
            "SELECT * FROM objects WHERE study_instance_uid = ? ORDER BY received_at",
            (study_instance_uid,),
        )
        return [SpoolEntry.from_row(r) for r in rows]

    def get(self, receipt_id: str) -> SpoolEntry | None:
        rows = self.db.query("SELECT * FROM objects WHERE receipt_id = ?", (receipt_id,))
        return SpoolEntry.from_row(rows[0]) if rows else None

    def count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM objects")[0][0])

    def stored_bytes(self) -> int:
        """Bytes of encrypted files the index accounts for (purged copies excluded)."""
        return int(
            self.db.query(
                "SELECT COALESCE(SUM(stored_size), 0) FROM objects WHERE status != ?",
                (STATUS_PURGED,),
            )[0][0]
        )

    def mark_purged(self, spool_path: str) -> bool:
        """Record that the copy at ``spool_path`` (relative) was deleted after delivery.

        Idempotent; returns False when no row has that path. Call it after the file is
        gone, so a crash in between leaves a row that still says "received" for a file
        the next sweep finds missing and marks again.
        """
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE objects SET status = ? WHERE spool_path = ?", (STATUS_PURGED, spool_path)
            )
        return cursor.rowcount > 0

    def orphans(self) -> list[Path]:
        """Encrypted files no row refers to: left by a store that was never
        acknowledged (the process died between writing the file and recording it)."""
        known = {r[0] for r in self.db.query("SELECT spool_path FROM objects")}
        return [p for p in self.layout.iter_object_files() if self.layout.relative(p) not in known]
