"""Storage commitment, the core: requests that survive restarts, delivery outcomes, and
the rule that decides when and how a request is answered. No DICOM networking here.

A referenced instance is *committed* only when an ObjectDelivered says the PACS holds
the copy the gateway holds (same dataset SHA-256): "committed" means "in the hospital
PACS", never merely "on the trailer". A request is answered when every instance is
committed or has failed for good; at its deadline, the instances still outstanding are
reported failed-for-now (Resource Limitation) so the modality keeps its copies.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trailerlink_spool.db import Database
from trailerlink_spool.index import STATUS_CONFLICT, SpoolEntry

from trailerlink_gateway.statuses import (
    COMMIT_EVENT_ALL_SUCCESS,
    COMMIT_EVENT_SOME_FAILED,
    CommitFailure,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    transaction_uid  TEXT PRIMARY KEY,
    calling_ae_title TEXT NOT NULL,
    requested_at     REAL NOT NULL,
    deadline_at      REAL NOT NULL,
    answered_at      REAL,
    event_type       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS request_items (
    transaction_uid  TEXT NOT NULL REFERENCES requests (transaction_uid) ON DELETE CASCADE,
    position         INTEGER NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    PRIMARY KEY (transaction_uid, position)
);
CREATE TABLE IF NOT EXISTS outcomes (
    sop_instance_uid TEXT NOT NULL,
    dataset_sha256   TEXT NOT NULL,
    delivered        INTEGER NOT NULL,
    reason_code      INTEGER NOT NULL DEFAULT 0,
    permanent        INTEGER NOT NULL DEFAULT 1,
    recorded_at      REAL NOT NULL,
    PRIMARY KEY (sop_instance_uid, dataset_sha256, delivered)
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (requested_at) WHERE answered_at IS NULL;
"""


@dataclass(frozen=True)
class CommitItem:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitRequest:
    transaction_uid: str
    calling_ae_title: str
    requested_at: float
    deadline_at: float
    items: tuple[CommitItem, ...]
    attempts: int = 0
    next_attempt_at: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """What a downstream event said about one copy of an instance."""

    delivered: bool
    dataset_sha256: str
    reason_code: int = 0
    permanent: bool = True


@dataclass(frozen=True)
class Verdict:
    """Where a request stands."""

    ready: bool
    committed: tuple[CommitItem, ...] = ()
    failed: tuple[tuple[CommitItem, CommitFailure], ...] = ()
    pending: tuple[CommitItem, ...] = field(default=())

    @property
    def event_type(self) -> int:
        return COMMIT_EVENT_SOME_FAILED if self.failed else COMMIT_EVENT_ALL_SUCCESS


def judge(
    request: CommitRequest,
    copies: Mapping[str, Sequence[SpoolEntry]],
    outcomes: Mapping[str, Sequence[Outcome]],
    now: float,
) -> Verdict:
    """Decide each referenced instance and whether the request can be answered.

    ``copies``: the spool's copies by SOP Instance UID (oldest first);
    ``outcomes``: delivery outcomes by SOP Instance UID.
    """
    committed: list[CommitItem] = []
    failed: list[tuple[CommitItem, CommitFailure]] = []
    pending: list[CommitItem] = []
    missing: list[CommitItem] = []
    for item in request.items:
        held = copies.get(item.sop_instance_uid) or ()
        if not held:
            missing.append(item)
            continue
        latest = held[-1]
        if latest.sop_class_uid != item.sop_class_uid:
            failed.append((item, CommitFailure.CLASS_INSTANCE_CONFLICT))
            continue
        if latest.status == STATUS_CONFLICT:
            # The modality's copy differs from the one on its way to PACS.
            failed.append((item, CommitFailure.PROCESSING_FAILURE))
            continue
        said = [
            o
            for o in outcomes.get(item.sop_instance_uid, ())
            if o.dataset_sha256 in (latest.dataset_sha256, "")
        ]
        if any(o.delivered for o in said):
            committed.append(item)
        elif any(not o.delivered and o.permanent for o in said):
            failed.append((item, CommitFailure.PROCESSING_FAILURE))
        else:
            pending.append(item)
    # Never-received instances do not hold the answer back: they may still arrive (on a
    # parallel association) while others are outstanding, and are failed at the answer.
    failed.extend((item, CommitFailure.NO_SUCH_OBJECT_INSTANCE) for item in missing)
    if pending and now >= request.deadline_at:
        failed.extend((item, CommitFailure.RESOURCE_LIMITATION) for item in pending)
        pending = []
    order = {item: i for i, item in enumerate(request.items)}
    failed.sort(key=lambda f: order[f[0]])
    return Verdict(not pending, tuple(committed), tuple(failed), tuple(pending))


class CommitmentStore:
    """Commitment requests and delivery outcomes in SQLite (durable on return)."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    def add_request(
        self,
        transaction_uid: str,
        calling_ae_title: str,
        items: Iterable[CommitItem],
        deadline_at: float,
        now: float | None = None,
    ) -> bool:
        """Record a request; False if this Transaction UID is already open (kept as is).

        A Transaction UID answered before is reopened: the modality asks again.
        """
        now = time.time() if now is None else now
        items = list(items)
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT answered_at FROM requests WHERE transaction_uid = ?", (transaction_uid,)
            ).fetchone()
            if row is not None and row[0] is None:
                return False
            if row is not None:
                conn.execute("DELETE FROM requests WHERE transaction_uid = ?", (transaction_uid,))
            conn.execute(
                "INSERT INTO requests (transaction_uid, calling_ae_title, requested_at,"
                " deadline_at) VALUES (?, ?, ?, ?)",
                (transaction_uid, calling_ae_title, now, deadline_at),
            )
            conn.executemany(
                "INSERT INTO request_items VALUES (?, ?, ?, ?)",
                [
                    (transaction_uid, i, it.sop_class_uid, it.sop_instance_uid)
                    for i, it in enumerate(items)
                ],
            )
        return True

    def open_requests(self) -> list[CommitRequest]:
        rows = self.db.query(
            "SELECT * FROM requests WHERE answered_at IS NULL ORDER BY requested_at"
        )
        requests = []
        for r in rows:
            items = self.db.query(
                "SELECT sop_class_uid, sop_instance_uid FROM request_items"
                " WHERE transaction_uid = ? ORDER BY position",
                (r["transaction_uid"],),
            )
            requests.append(
                CommitRequest(
                    r["transaction_uid"],
                    r["calling_ae_title"],
                    r["requested_at"],
                    r["deadline_at"],
                    tuple(CommitItem(i[0], i[1]) for i in items),
                    r["attempts"],
                    r["next_attempt_at"],
                )
            )
        return requests

    def pending_count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM requests WHERE answered_at IS NULL")[0][0])

    def is_answered(self, transaction_uid: str) -> bool:
        rows = self.db.query(
            "SELECT answered_at FROM requests WHERE transaction_uid = ?", (transaction_uid,)
        )
        return bool(rows) and rows[0][0] is not None

    def mark_answered(
        self, transaction_uid: str, event_type: int, now: float | None = None
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE requests SET answered_at = ?, event_type = ?,"
                " attempts = attempts + 1 WHERE transaction_uid = ?",
                (time.time() if now is None else now, event_type, transaction_uid),
            )

    def postpone(self, transaction_uid: str, next_attempt_at: float) -> None:
        """A report could not be delivered: try again at ``next_attempt_at``."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE requests SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE transaction_uid = ?",
                (next_attempt_at, transaction_uid),
            )

    def record_outcome(
        self, sop_instance_uid: str, outcome: Outcome, now: float | None = None
    ) -> None:
        """Remember what a delivery event said (idempotent: replays change nothing)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT"
                " (sop_instance_uid, dataset_sha256, delivered) DO UPDATE SET"
                " reason_code = excluded.reason_code, permanent = excluded.permanent",
                (
                    sop_instance_uid,
                    outcome.dataset_sha256,
                    int(outcome.delivered),
                    outcome.reason_code,
                    int(outcome.permanent),
                    time.time() if now is None else now,
                ),
            )

    def outcomes(self, sop_instance_uids: Iterable[str]) -> dict[str, list[Outcome]]:
        found: dict[str, list[Outcome]] = {}
        for uid in set(sop_instance_uids):
            for r in self.db.query("SELECT * FROM outcomes WHERE sop_instance_uid = ?", (uid,)):
                found.setdefault(uid, []).append(
                    Outcome(
                        bool(r["delivered"]),
                        r["dataset_sha256"],
                        r["reason_code"],
                        bool(r["permanent"]),
                    )
                )
        return found

    def prune(self, older_than: float) -> int:
        """Forget answered requests and outcomes recorded before ``older_than``."""
        with self.db.transaction() as conn:
            n = conn.execute(
                "DELETE FROM requests WHERE answered_at IS NOT NULL AND answered_at < ?",
                (older_than,),
            ).rowcount
            n += conn.execute("DELETE FROM outcomes WHERE recorded_at < ?", (older_than,)).rowcount
        return n
