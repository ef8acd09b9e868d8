# ruff: noqa: S608 - SQL is built only from the constant column lists below; values are bound
"""The ledger: what the ingest has verified, stored in PACS, refused or held as a conflict,
keyed by SOP Instance UID + dataset SHA-256, and the receipts each trailer reads back.

One implementation, two databases: SQLite (a file; the default for one replica) and
PostgreSQL (``postgresql://`` DSN; what several replicas share). The same SQL runs on
both; the only differences are the DDL of the receipt cursor and how a transaction
takes its lock (``BEGIN IMMEDIATE`` vs advisory transaction locks), in
:class:`trailerlink_common.sqlstore.SqlStore`, which the monitor's fleet state shares.

Receipt cursors are strictly increasing in commit order (PostgreSQL serialises receipt
inserts with an advisory lock), so a reader that pages with ``after=<last cursor>``
never skips one. All methods block: call them from a thread.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, fields
from typing import Any

from trailerlink_common.sqlstore import DatabaseUnavailable, SqlStore
from trailerlink_events import wire


class LedgerUnavailable(DatabaseUnavailable):
    """The database does not answer (PostgreSQL down); retry later."""


class ClaimKind(enum.Enum):
    NEW = "new"  # first time: store it in PACS
    RETRY = "retry"  # claimed before but not stored yet (crash, PACS down)
    DUPLICATE = "duplicate"  # same UID + same content already delivered
    CONFLICT = "conflict"  # same UID, other content already known


@dataclass(frozen=True)
class ObjectRow:
    sop_instance_uid: str
    dataset_sha256: str
    trailer_id: str
    study_instance_uid: str
    upload_id: str
    state: str
    stored_transfer_syntax_uid: str
    dicom_status: int
    store_attempts: int
    storage_committed: int
    received_at: float
    delivered_at: float | None
    conflict_path: str


@dataclass(frozen=True)
class Receipt:
    """One outcome for one upload, as a trailer reads it back."""

    upload_id: str
    trailer_id: str
    sop_instance_uid: str
    study_instance_uid: str
    dataset_sha256: str
    outcome: str  # "delivered" | "failed"
    reason_code: str = ""  # FailureReason name for failures
    reason: str = ""
    stage: str = ""
    dicom_status: int = 0
    stored_transfer_syntax_uid: str = ""
    storage_committed: int = 0
    duplicate: int = 0
    permanent: int = 1
    at: float = 0.0
    cursor: int = 0

    def to_json(self) -> dict[str, Any]:
        """This receipt as ``GET /v1/receipts`` answers it (the wire contract's)."""
        return wire.Receipt(
            cursor=str(self.cursor),
            upload_id=self.upload_id,
            sop_instance_uid=self.sop_instance_uid,
            study_instance_uid=self.study_instance_uid,
            dataset_sha256=self.dataset_sha256,
            outcome=self.outcome,
            reason_code=self.reason_code,
            reason=self.reason,
            stage=self.stage,
            dicom_status=self.dicom_status,
            stored_transfer_syntax_uid=self.stored_transfer_syntax_uid,
            storage_committed=bool(self.storage_committed),
            duplicate=bool(self.duplicate),
            permanent=bool(self.permanent),
            at=self.at,
        ).to_json()


@dataclass(frozen=True)
class Commitment:
    """A storage-commitment transaction for one stored object (see commitment.py)."""

    transaction_uid: str
    upload_id: str
    sop_instance_uid: str
    sop_class_uid: str
    dataset_sha256: str
    event: str  # the UploadCompleted event, base64 protobuf
    stored_transfer_syntax_uid: str
    dicom_status: int
    requested_at: float
    result: str = ""  # "" pending | "committed" | "failed:<hex reason>"
    reported_at: float | None = None
    called_ae_title: str = ""  # where it was stored (the canary's test AE or the PACS)


_OBJECT_COLUMNS = [f.name for f in fields(ObjectRow)]
_COMMITMENT_COLUMNS = [f.name for f in fields(Commitment)]
_RECEIPT_COLUMNS = [f.name for f in fields(Receipt) if f.name != "cursor"]

_OBJECTS_DDL = """
CREATE TABLE IF NOT EXISTS objects (
    sop_instance_uid TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL,
    trailer_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    state TEXT NOT NULL,
    stored_transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    dicom_status INTEGER NOT NULL DEFAULT 0,
    store_attempts INTEGER NOT NULL DEFAULT 0,
    storage_committed INTEGER NOT NULL DEFAULT 0,
    received_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION,
    conflict_path TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sop_instance_uid, dataset_sha256)
)"""
_RECEIPTS_DDL = """
CREATE TABLE IF NOT EXISTS receipts (
    cursor {cursor_type},
    upload_id TEXT NOT NULL UNIQUE,
    trailer_id TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason_code TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL DEFAULT '',
    dicom_status INTEGER NOT NULL DEFAULT 0,
    stored_transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    storage_committed INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0,
    permanent INTEGER NOT NULL DEFAULT 1,
    at DOUBLE PRECISION NOT NULL
)"""
_COMMITMENTS_DDL = """
CREATE TABLE IF NOT EXISTS commitments (
    transaction_uid TEXT PRIMARY KEY,
    upload_id TEXT NOT NULL UNIQUE,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL,
    event TEXT NOT NULL,
    stored_transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    dicom_status INTEGER NOT NULL DEFAULT 0,
    requested_at DOUBLE PRECISION NOT NULL,
    result TEXT NOT NULL DEFAULT '',
    reported_at DOUBLE PRECISION,
    called_ae_title TEXT NOT NULL DEFAULT ''
)"""
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS receipts_by_trailer ON receipts (trailer_id, cursor)",
    "CREATE INDEX IF NOT EXISTS objects_by_state ON objects (state)",
]
_RECEIPT_LOCK = 7_240_001


class Ledger(SqlStore):
    """The ledger on SQLite (``sqlite_path``) or PostgreSQL (``dsn``)."""

    unavailable = LedgerUnavailable

    # --- schema ---------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the tables if missing (idempotent; safe from several replicas)."""
        cursor_type = (
            "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        )
        with self._transaction("ledger-migrate") as cur:
            cur.execute(_OBJECTS_DDL)
            cur.execute(_RECEIPTS_DDL.format(cursor_type=cursor_type))
            cur.execute(_COMMITMENTS_DDL)
            for ddl in _INDEXES:
                cur.execute(ddl)

    # --- objects --------------------------------------------------------------------
    def _object_rows(self, cur: Any, uid: str) -> list[ObjectRow]:
        cur.execute(
            self._sql(
                f"SELECT {', '.join(_OBJECT_COLUMNS)} FROM objects WHERE sop_instance_uid = ?"
            ),
            (uid,),
        )
        return [ObjectRow(*row) for row in cur.fetchall()]

    def claim(
        self,
        *,
        sop_instance_uid: str,
        dataset_sha256: str,
        trailer_id: str,
        study_instance_uid: str,
        upload_id: str,
    ) -> tuple[ClaimKind, ObjectRow]:
        """Decide what to do with a verified object, atomically across replicas.

        Same UID + same hash delivered before: DUPLICATE (no second store). Same UID with
        another hash already known (pending, delivered or refused): CONFLICT, and this
        copy is recorded in state ``conflict`` — nothing is overwritten. Otherwise NEW
        (or RETRY when this object was claimed but never stored).
        """
        with self._transaction(f"uid:{sop_instance_uid}") as cur:
            rows = self._object_rows(cur, sop_instance_uid)
            mine = next((r for r in rows if r.dataset_sha256 == dataset_sha256), None)
            others = [
                r for r in rows if r.dataset_sha256 != dataset_sha256 and r.state != "conflict"
            ]
            if mine is not None:
                if mine.state == "delivered":
                    return ClaimKind.DUPLICATE, mine
                if mine.state == "conflict":
                    return ClaimKind.CONFLICT, mine
                if mine.state == "refused":
                    cur.execute(
                        self._sql(
                            "UPDATE objects SET state = 'pending', upload_id = ? "
                            "WHERE sop_instance_uid = ? AND dataset_sha256 = ?"
                        ),
                        (upload_id, sop_instance_uid, dataset_sha256),
                    )
                    return ClaimKind.NEW, mine
                return ClaimKind.RETRY, mine
            state = "conflict" if others else "pending"
            row = ObjectRow(
                sop_instance_uid,
                dataset_sha256,
                trailer_id,
                study_instance_uid,
                upload_id,
                state,
                "",
                0,
                0,
                0,
                time.time(),
                None,
                "",
            )
            cur.execute(
                self._sql(
                    f"INSERT INTO objects ({', '.join(_OBJECT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _OBJECT_COLUMNS)})"
                ),
                tuple(getattr(row, c) for c in _OBJECT_COLUMNS),
            )
            return (ClaimKind.CONFLICT if others else ClaimKind.NEW), row

    def set_conflict_path(self, sop_instance_uid: str, dataset_sha256: str, path: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE objects SET conflict_path = ? "
                    "WHERE sop_instance_uid = ? AND dataset_sha256 = ?"
                ),
                (path, sop_instance_uid, dataset_sha256),
            )

    def count_store_attempt(self, sop_instance_uid: str, dataset_sha256: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE objects SET store_attempts = store_attempts + 1 "
                    "WHERE sop_instance_uid = ? AND dataset_sha256 = ?"
                ),
                (sop_instance_uid, dataset_sha256),
            )

    def get_object(self, sop_instance_uid: str, dataset_sha256: str) -> ObjectRow | None:
        rows = self._read(
            f"SELECT {', '.join(_OBJECT_COLUMNS)} FROM objects "
            "WHERE sop_instance_uid = ? AND dataset_sha256 = ?",
            (sop_instance_uid, dataset_sha256),
        )
        return ObjectRow(*rows[0]) if rows else None

    def objects(self, sop_instance_uid: str) -> list[ObjectRow]:
        rows = self._read(
            f"SELECT {', '.join(_OBJECT_COLUMNS)} FROM objects "
            "WHERE sop_instance_uid = ? ORDER BY received_at",
            (sop_instance_uid,),
        )
        return [ObjectRow(*r) for r in rows]

    def backlog(self) -> int:
        """Objects claimed for PACS and not stored yet."""
        return int(self._read("SELECT COUNT(*) FROM objects WHERE state = 'pending'")[0][0])

    # --- outcomes -------------------------------------------------------------------
    def record_outcome(self, receipt: Receipt, *, object_state: str | None = None) -> Receipt:
        """Store ``receipt`` (once per upload) and move the object to ``object_state``.

        Returns the receipt as stored: if this upload already has one (a replayed
        event), that earlier receipt, unchanged.
        """
        with self._transaction("receipts") as cur:
            if self.postgres:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_RECEIPT_LOCK,))
            if object_state is not None:
                cur.execute(
                    self._sql(
                        "UPDATE objects SET state = ?, stored_transfer_syntax_uid = ?, "
                        "dicom_status = ?, storage_committed = ?, delivered_at = ? "
                        "WHERE sop_instance_uid = ? AND dataset_sha256 = ? AND state <> 'conflict'"
                    ),
                    (
                        object_state,
                        receipt.stored_transfer_syntax_uid,
                        receipt.dicom_status,
                        receipt.storage_committed,
                        receipt.at if object_state == "delivered" else None,
                        receipt.sop_instance_uid,
                        receipt.dataset_sha256,
                    ),
                )
            cur.execute(
                self._sql(
                    f"INSERT INTO receipts ({', '.join(_RECEIPT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _RECEIPT_COLUMNS)}) "
                    "ON CONFLICT (upload_id) DO NOTHING"
                ),
                tuple(getattr(receipt, c) for c in _RECEIPT_COLUMNS),
            )
            cur.execute(
                self._sql(
                    f"SELECT cursor, {', '.join(_RECEIPT_COLUMNS)} FROM receipts "
                    "WHERE upload_id = ?"
                ),
                (receipt.upload_id,),
            )
            row = cur.fetchone()
        return _receipt(row)

    def receipt_for_upload(self, upload_id: str) -> Receipt | None:
        rows = self._read(
            f"SELECT cursor, {', '.join(_RECEIPT_COLUMNS)} FROM receipts WHERE upload_id = ?",
            (upload_id,),
        )
        return _receipt(rows[0]) if rows else None

    def receipts(self, trailer_id: str, after: int = 0, limit: int = 100) -> list[Receipt]:
        """A trailer's receipts with cursor > ``after``, oldest first."""
        rows = self._read(
            f"SELECT cursor, {', '.join(_RECEIPT_COLUMNS)} FROM receipts "
            "WHERE trailer_id = ? AND cursor > ? ORDER BY cursor LIMIT ?",
            (trailer_id, after, limit),
        )
        return [_receipt(r) for r in rows]

    # --- storage commitment ---------------------------------------------------------
    def begin_commitment(self, commitment: Commitment) -> Commitment:
        """The object is in PACS, awaiting its commitment: state ``committing`` and the
        transaction recorded. Returns the upload's transaction (an earlier one if the
        upload already has one: a retry asks again under the same UID)."""
        with self._transaction(f"uid:{commitment.sop_instance_uid}") as cur:
            cur.execute(
                self._sql(
                    "UPDATE objects SET state = 'committing', stored_transfer_syntax_uid = ?, "
                    "dicom_status = ? WHERE sop_instance_uid = ? AND dataset_sha256 = ? "
                    "AND state <> 'conflict'"
                ),
                (
                    commitment.stored_transfer_syntax_uid,
                    commitment.dicom_status,
                    commitment.sop_instance_uid,
                    commitment.dataset_sha256,
                ),
            )
            cur.execute(
                self._sql(
                    f"INSERT INTO commitments ({', '.join(_COMMITMENT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _COMMITMENT_COLUMNS)}) "
                    "ON CONFLICT (upload_id) DO NOTHING"
                ),
                tuple(getattr(commitment, c) for c in _COMMITMENT_COLUMNS),
            )
            cur.execute(
                self._sql(
                    f"SELECT {', '.join(_COMMITMENT_COLUMNS)} FROM commitments WHERE upload_id = ?"
                ),
                (commitment.upload_id,),
            )
            return Commitment(*cur.fetchone())

    def record_commitment_result(
        self, transaction_uid: str, sop_instance_uid: str, result: str
    ) -> int:
        """Record the PACS's report for one object (first report wins); rows changed."""
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE commitments SET result = ?, reported_at = ? WHERE transaction_uid = ? "
                    "AND sop_instance_uid = ? AND result = ''"
                ),
                (result, time.time(), transaction_uid, sop_instance_uid),
            )
            return int(cur.rowcount or 0)

    def commitments_reported(self) -> list[Commitment]:
        """Reported transactions whose upload has no receipt yet."""
        rows = self._read(
            f"SELECT {', '.join('c.' + c for c in _COMMITMENT_COLUMNS)} "
            "FROM commitments c WHERE c.result <> '' AND NOT EXISTS "
            "(SELECT 1 FROM receipts r WHERE r.upload_id = c.upload_id)"
        )
        return [Commitment(*r) for r in rows]

    def commitments_overdue(self, requested_before: float) -> list[Commitment]:
        rows = self._read(
            f"SELECT {', '.join(_COMMITMENT_COLUMNS)} FROM commitments "
            "WHERE result = '' AND requested_at < ?",
            (requested_before,),
        )
        return [Commitment(*r) for r in rows]

    def touch_commitment(self, transaction_uid: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql("UPDATE commitments SET requested_at = ? WHERE transaction_uid = ?"),
                (time.time(), transaction_uid),
            )


def _receipt(row: tuple[Any, ...]) -> Receipt:
    cursor, *rest = row
    return Receipt(**dict(zip(_RECEIPT_COLUMNS, rest, strict=True)), cursor=int(cursor))
