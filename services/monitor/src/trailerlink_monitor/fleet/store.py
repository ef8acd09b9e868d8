"""The fleet's state: what each trailer last said, which images MPPS says were taken,
which reached PACS, and each image's journey. No Kafka and no HTTP here.

State lives in SQLite (WAL; the default, one replica) or PostgreSQL (a DSN; replicas
share it) through one code path (:class:`trailerlink_common.sqlstore.SqlStore`, as the
ingest's ledger), so a restarted monitor keeps its completeness list and audit trail;
every write is idempotent, because events arrive at least once and out of order. Only
UIDs, trailer ids, stages and times are stored: no patient data. Blocking: call the
methods from a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trailerlink_common.sqlstore import DatabaseUnavailable, SqlStore

# Portable DDL: DOUBLE PRECISION is SQLite's REAL; {blob} is BLOB or BYTEA.
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS trailers (
    trailer_id TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    heartbeat {blob} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS expected (
    sop_uid TEXT PRIMARY KEY,
    trailer_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    mpps_uid TEXT NOT NULL,
    listed_at DOUBLE PRECISION NOT NULL,
    due_at DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS expected_due ON expected (due_at)",
    """CREATE TABLE IF NOT EXISTS delivered (
    sop_uid TEXT PRIMARY KEY,
    trailer_id TEXT NOT NULL,
    delivered_at DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS journey (
    event_id TEXT PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    trailer_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    service TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS journey_sop ON journey (sop_uid)",
    "CREATE INDEX IF NOT EXISTS journey_study ON journey (study_uid)",
]
_JOURNEY = "SELECT stage, service, at, trailer_id, sop_uid, study_uid, detail FROM journey "
_JOURNEY_BY_SOP = _JOURNEY + "WHERE sop_uid = ? ORDER BY at, stage"
_JOURNEY_BY_STUDY = _JOURNEY + "WHERE study_uid = ? ORDER BY at, stage"
# Per image not in PACS (EXISTS probes journey through its sop_uid index), then per study.
# Parameters: now, the received stage, the two sent stages, the trailer twice ('' = all),
# the limit.
_STUDIES_INCOMPLETE = (
    "SELECT trailer_id, study_uid, SUM(overdue), SUM(1 - overdue),"
    " SUM(received * (1 - sent)), SUM(sent), SUM((1 - received) * (1 - sent)),"
    " MIN(listed_at), MIN(due_at) FROM ("
    "SELECT e.trailer_id, e.study_uid, e.listed_at, e.due_at,"
    " CASE WHEN e.due_at <= ? THEN 1 ELSE 0 END AS overdue,"
    " CASE WHEN EXISTS (SELECT 1 FROM journey j WHERE j.sop_uid = e.sop_uid"
    "  AND j.stage = ?) THEN 1 ELSE 0 END AS received,"
    " CASE WHEN EXISTS (SELECT 1 FROM journey j WHERE j.sop_uid = e.sop_uid"
    "  AND j.stage IN (?, ?)) THEN 1 ELSE 0 END AS sent "
    "FROM expected e LEFT JOIN delivered d ON d.sop_uid = e.sop_uid "
    "WHERE d.sop_uid IS NULL AND (CAST(? AS TEXT) = '' OR e.trailer_id = ?)) images "
    "GROUP BY trailer_id, study_uid ORDER BY MIN(due_at), trailer_id, study_uid LIMIT ?"
)


class FleetStateUnavailable(DatabaseUnavailable):
    """The fleet state's database does not answer (PostgreSQL down); retry later."""


@dataclass(frozen=True)
class HeartbeatUpdate:
    """What recording a heartbeat changed."""

    newest: bool  # it is the trailer's newest heartbeat (gauges should follow it)
    missed: int  # heartbeats skipped between the previous newest and this one


@dataclass(frozen=True)
class MissingImage:
    """An image MPPS listed as taken that is not in PACS."""

    sop_instance_uid: str
    study_instance_uid: str
    trailer_id: str
    mpps_sop_instance_uid: str
    listed_at: float
    due_at: float


@dataclass(frozen=True)
class JourneyStep:
    stage: str
    service: str
    at: float
    trailer_id: str
    sop_instance_uid: str
    study_instance_uid: str
    detail: str
    # ON_TRAILER only: seconds since the gateway received the image.
    age_seconds: float | None = None


# Stages of the audit trail that the code reasons about.
RECEIVED = "received"  # the trailer's gateway has it durable (its own time)
UPLOADED = "uploaded"  # the data centre has the whole upload
IN_PACS = "in_pacs"
ON_TRAILER = "on_trailer"  # derived when read: received, not yet sent


@dataclass(frozen=True)
class StudyCompleteness:
    """One study's images that an MPPS listed as taken and that are not in PACS. Each
    is counted once in ``missing`` or ``pending`` (deadline) and once by where it is:
    ``on_trailer`` (the gateway has it, the data centre has no upload yet),
    ``at_data_centre`` (uploaded, not yet in PACS) or ``not_received`` (no gateway
    receipt has reached the data centre: not sent by the modality, or not relayed yet)."""

    trailer_id: str
    study_instance_uid: str
    missing: int
    pending: int
    on_trailer: int
    at_data_centre: int
    not_received: int
    listed_at: float  # the earliest MPPS COMPLETED that listed them
    due_at: float  # the earliest deadline among them


@dataclass(frozen=True)
class CompletenessCounts:
    missing: dict[str, int]  # past the deadline, by trailer
    pending: dict[str, int]  # within the deadline, by trailer


class FleetStore(SqlStore):
    """Fleet state on SQLite (``path``) or PostgreSQL (``dsn``); tables made at start.
    Thread-safe (a connection per thread); each method is one short transaction."""

    unavailable = FleetStateUnavailable

    def __init__(self, path: Path | None = None, *, dsn: str = "") -> None:
        # NORMAL: a power cut may lose the last moments, which replays from Kafka restore.
        super().__init__(dsn=dsn, sqlite_path=path, sqlite_synchronous="NORMAL")
        blob = "BYTEA" if self.postgres else "BLOB"
        with self._transaction("fleet-migrate") as cur:
            for ddl in _SCHEMA:
                cur.execute(ddl.format(blob=blob))

    # --- heartbeats ------------------------------------------------------------------
    def record_heartbeat(
        self, trailer_id: str, sequence: int, sent_at: float, raw: bytes
    ) -> HeartbeatUpdate:
        """Keep the trailer's newest heartbeat (by sequence; a replay or an older one
        changes nothing). A restarted agent starts again at sequence 1: a heartbeat
        with a lower sequence but a later send time replaces the stored one."""
        with self._transaction(f"trailer:{trailer_id}") as cur:
            cur.execute(
                self._sql("SELECT sequence, sent_at FROM trailers WHERE trailer_id = ?"),
                (trailer_id,),
            )
            row = cur.fetchone()
            if row is not None:
                last_seq, last_at = row
                restarted = sequence < last_seq and sent_at > last_at
                if sequence <= last_seq and not restarted:
                    return HeartbeatUpdate(newest=False, missed=0)
                missed = 0 if restarted else max(0, sequence - last_seq - 1)
            else:
                missed = 0
            cur.execute(
                self._sql(
                    "INSERT INTO trailers (trailer_id, sequence, sent_at, heartbeat) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (trailer_id) DO UPDATE SET "
                    "sequence = excluded.sequence, sent_at = excluded.sent_at, "
                    "heartbeat = excluded.heartbeat"
                ),
                (trailer_id, sequence, sent_at, raw),
            )
            return HeartbeatUpdate(newest=True, missed=missed)

    def heartbeats(self) -> dict[str, tuple[float, bytes]]:
        """Every trailer's newest heartbeat: trailer id -> (sent at, serialized)."""
        rows = self._read("SELECT trailer_id, sent_at, heartbeat FROM trailers")
        return {t: (at, bytes(raw)) for t, at, raw in rows}

    # --- completeness ----------------------------------------------------------------
    def expect(
        self,
        trailer_id: str,
        study_uid: str,
        mpps_uid: str,
        sop_uids: Iterable[str],
        listed_at: float,
        deadline_seconds: float,
    ) -> int:
        """Record images an MPPS COMPLETED listed; returns how many were new."""
        new = 0
        with self._transaction() as cur:
            for uid in sop_uids:
                cur.execute(
                    self._sql(
                        "INSERT INTO expected VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (sop_uid) DO NOTHING"
                    ),
                    (uid, trailer_id, study_uid, mpps_uid, listed_at, listed_at + deadline_seconds),
                )
                new += cur.rowcount
        return new

    def mark_delivered(self, trailer_id: str, sop_uid: str, delivered_at: float) -> bool:
        """Record that ``sop_uid`` is in PACS; True the first time."""
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO delivered VALUES (?, ?, ?) ON CONFLICT (sop_uid) DO NOTHING"
                ),
                (sop_uid, trailer_id, delivered_at),
            )
            return cur.rowcount == 1

    def completeness(self, now: float) -> CompletenessCounts:
        rows = self._read(
            "SELECT e.trailer_id, CASE WHEN e.due_at <= ? THEN 1 ELSE 0 END AS overdue, "
            "count(*) FROM expected e LEFT JOIN delivered d ON d.sop_uid = e.sop_uid "
            "WHERE d.sop_uid IS NULL GROUP BY e.trailer_id, overdue",
            (now,),
        )
        missing: dict[str, int] = {}
        pending: dict[str, int] = {}
        for trailer, overdue, count in rows:
            (missing if overdue else pending)[trailer] = int(count)
        return CompletenessCounts(missing, pending)

    def studies_incomplete(
        self, now: float, trailer_id: str | None = None, limit: int = 1000
    ) -> list[StudyCompleteness]:
        """Studies with images listed as taken and not in PACS, earliest deadline first."""
        trailer = trailer_id or ""
        args = (now, RECEIVED, UPLOADED, IN_PACS, trailer, trailer, limit)
        return [
            StudyCompleteness(
                t,
                study,
                int(missing),
                int(pending),
                int(on_trailer),
                int(at_data_centre),
                int(not_received),
                listed,
                due,
            )
            for (
                t,
                study,
                missing,
                pending,
                on_trailer,
                at_data_centre,
                not_received,
                listed,
                due,
            ) in self._read(_STUDIES_INCOMPLETE, args)
        ]

    def missing(
        self, now: float, trailer_id: str | None = None, limit: int = 1000
    ) -> list[MissingImage]:
        """Images past their deadline and not in PACS, oldest first."""
        sql = (
            "SELECT e.sop_uid, e.study_uid, e.trailer_id, e.mpps_uid, e.listed_at, e.due_at "
            "FROM expected e LEFT JOIN delivered d ON d.sop_uid = e.sop_uid "
            "WHERE d.sop_uid IS NULL AND e.due_at <= ?"
        )
        args: list[object] = [now]
        if trailer_id:
            sql += " AND e.trailer_id = ?"
            args.append(trailer_id)
        sql += " ORDER BY e.due_at, e.sop_uid LIMIT ?"
        args.append(limit)
        return [MissingImage(*row) for row in self._read(sql, tuple(args))]

    # --- audit trail -----------------------------------------------------------------
    def add_step(self, event_id: str, step: JourneyStep) -> None:
        """Add one journey step; the same event twice adds it once."""
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO journey VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (event_id) DO NOTHING"
                ),
                (
                    event_id,
                    step.sop_instance_uid,
                    step.study_instance_uid,
                    step.trailer_id,
                    step.stage,
                    step.service,
                    step.at,
                    step.detail,
                ),
            )

    def journey(self, *, sop_uid: str = "", study_uid: str = "") -> list[JourneyStep]:
        """Steps of one image or of every image of a study, in time order."""
        sql = _JOURNEY_BY_SOP if sop_uid else _JOURNEY_BY_STUDY
        return [JourneyStep(*row) for row in self._read(sql, (sop_uid or study_uid,))]

    def purge(self, older_than: float) -> None:
        """Forget journeys, deliveries and expectations older than ``older_than``."""
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM journey WHERE at < ?"), (older_than,))
            cur.execute(self._sql("DELETE FROM expected WHERE listed_at < ?"), (older_than,))
            cur.execute(self._sql("DELETE FROM delivered WHERE delivered_at < ?"), (older_than,))


def not_yet_sent(steps: Iterable[JourneyStep], at: float) -> list[JourneyStep]:
    """The derived ``on_trailer`` step, as of ``at``, of every image in ``steps`` that the
    trailer's gateway received and whose upload the data centre has not completed: it is
    still on the trailer, and its age is the time since the gateway's receipt."""
    received: dict[str, JourneyStep] = {}
    sent: set[str] = set()
    for step in steps:
        if step.stage == RECEIVED:
            first = received.get(step.sop_instance_uid)
            if first is None or step.at < first.at:
                received[step.sop_instance_uid] = step
        elif step.stage in (UPLOADED, IN_PACS):
            sent.add(step.sop_instance_uid)
    out = []
    for sop, step in received.items():
        if sop in sent:
            continue
        age = max(0.0, at - step.at)
        out.append(
            JourneyStep(
                ON_TRAILER,
                "trailer",
                max(at, step.at),
                step.trailer_id,
                sop,
                step.study_instance_uid,
                f"on the trailer, not yet sent: {_duration(age)} since the gateway received it",
                round(age, 1),
            )
        )
    return out


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def now() -> float:
    return time.time()
