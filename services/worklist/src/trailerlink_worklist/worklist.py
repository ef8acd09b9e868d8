"""The worklist core: what happens to the cache when upstream or staff change something.

Every change is one cache transaction that also queues the event announcing it
(WorklistChanged, DemographicsCorrection) in the outbox. Adapters (DICOM MWL, HL7)
translate their protocol into these calls; nothing here knows a protocol.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from trailerlink_events import messages as m
from trailerlink_events import topics

from trailerlink_worklist import metrics
from trailerlink_worklist.cache import CORRECTION_FIELDS, Cache, CachedStep
from trailerlink_worklist.corrections import Correction
from trailerlink_worklist.model import ScheduledStep, SiteFilter, Source, StepStatus

log = logging.getLogger(__name__)

PRODUCER = "worklist"
LAST_SYNC = "last_sync_at"

_CHANGE = {
    "added": m.WorklistChange.WORKLIST_CHANGE_ADDED,
    "updated": m.WorklistChange.WORKLIST_CHANGE_UPDATED,
    "cancelled": m.WorklistChange.WORKLIST_CHANGE_CANCELLED,
}
_SOURCE = {
    Source.DICOM_MWL: m.WorklistSource.WORKLIST_SOURCE_DICOM_MWL,
    Source.HL7: m.WorklistSource.WORKLIST_SOURCE_HL7,
    Source.LOCAL: m.WorklistSource.WORKLIST_SOURCE_LOCAL,
}


class NotFound(LookupError):
    """No scheduled step with that key in the cache."""


@dataclass(frozen=True)
class Change:
    change: str  # added | updated | cancelled
    key: str


class Clock:
    """'Now' and 'today' in the trailer's time zone (replaceable in tests)."""

    def __init__(
        self, timezone: str = "Europe/London", now: Callable[[], float] = time.time
    ) -> None:
        self.zone = ZoneInfo(timezone)
        self._now = now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now(), self.zone)

    def today(self) -> date:
        return self.now().date()

    def today_str(self) -> str:
        return self.today().strftime("%Y%m%d")


class Worklist:
    """Operations on this trailer's slice of the worklist."""

    def __init__(
        self, cache: Cache, site: SiteFilter, trailer_id: str, clock: Clock, horizon_days: int = 14
    ) -> None:
        self.cache = cache
        self.site = site
        self.trailer_id = trailer_id
        self.clock = clock
        self.horizon_days = horizon_days

    # --- which days belong in the cache ------------------------------------------------
    def window(self) -> tuple[str, str]:
        """First and last scheduled date kept (YYYYMMDD): today .. today + horizon."""
        today = self.clock.today()
        return (
            today.strftime("%Y%m%d"),
            (today + timedelta(days=self.horizon_days)).strftime("%Y%m%d"),
        )

    def wanted(self, step: ScheduledStep) -> bool:
        first, last = self.window()
        return self.site.accepts(step) and first <= step.scheduled_date <= last

    # --- upstream changes -------------------------------------------------------------------
    def upsert(self, step: ScheduledStep, source: Source) -> Change | None:
        """Add or update one step; None if unchanged or not for this trailer."""
        step = self.site.complete(step).with_defaults()
        if not self.wanted(step):
            return None
        with self.cache.transaction() as conn:
            change = self._upsert(conn, step, source)
        return change

    def replace_window(
        self,
        steps: Iterable[ScheduledStep],
        source: Source,
        first: str,
        last: str,
        keep: frozenset[str] = frozenset(),
    ) -> list[Change]:
        """Make the cache's steps of ``source`` dated ``first``..``last`` exactly ``steps``
        (those for this trailer): new ones added, changed ones updated, missing ones
        cancelled. Cached steps whose accession number is in ``keep`` (upstream sent
        them, but in a form we refused) stay as they are. One transaction."""
        wanted: dict[str, ScheduledStep] = {}
        for step in steps:
            step = self.site.complete(step).with_defaults()
            if self.wanted(step) and first <= step.scheduled_date <= last:
                wanted[step.key] = step
        changes: list[Change] = []
        with self.cache.transaction() as conn:
            for cached in self.cache.steps():
                s = cached.step
                if (
                    cached.source == source
                    and first <= s.scheduled_date <= last
                    and s.key not in wanted
                    and s.accession_number not in keep
                ):
                    self.cache.delete_step(conn, s.key)
                    self._announce(conn, "cancelled", s, source)
                    changes.append(Change("cancelled", s.key))
            for step in wanted.values():
                change = self._upsert(conn, step, source)
                if change:
                    changes.append(change)
            self.cache.set_meta(conn, LAST_SYNC, str(time.time()))
        return changes

    def cancel(self, key: str, source: Source) -> Change | None:
        """Remove a step upstream cancelled; None if it was not in the cache."""
        with self.cache.transaction() as conn:
            cached = self.cache.get_step(key)
            if cached is None:
                return None
            self.cache.delete_step(conn, key)
            self._announce(conn, "cancelled", cached.step, source)
        return Change("cancelled", key)

    def update_patient(
        self, patient_id: str, source: Source, update: Callable[[ScheduledStep], ScheduledStep]
    ) -> list[Change]:
        """Apply a demographics update to every step of the woman with ``patient_id``."""
        changes = []
        with self.cache.transaction() as conn:
            for cached in self.cache.steps():
                if cached.step.patient_id != patient_id:
                    continue
                new = self._overlay(update(cached.step))
                if new.content_hash() != cached.step.content_hash():
                    self.cache.put_step(conn, new, cached.source, cached.status)
                    self._announce(conn, "updated", new, source)
                    changes.append(Change("updated", new.key))
        return changes

    def mark_synced(self) -> None:
        """Record that upstream was heard from just now (for the cache age)."""
        with self.cache.transaction() as conn:
            self.cache.set_meta(conn, LAST_SYNC, str(time.time()))

    def last_sync(self) -> float | None:
        value = self.cache.get_meta(LAST_SYNC)
        return float(value) if value else None

    # --- the trailer's own changes --------------------------------------------------------
    def set_status(self, key: str, status: StepStatus) -> CachedStep:
        """Staff or MPPS moved a step on (arrived, did not attend, in progress ...)."""
        with self.cache.transaction() as conn:
            cached = self.cache.get_step(key)
            if cached is None:
                raise NotFound(key)
            self.cache.set_status(conn, key, status)
        return CachedStep(cached.step, status, cached.source, time.time())

    def correct(
        self, key: str, correction: Correction, corrected_by: str
    ) -> m.DemographicsCorrection:
        """Apply a correction locally and queue it for upstream, in one transaction."""
        now = self.clock.now()
        correction_id = str(uuid.uuid4())
        with self.cache.transaction() as conn:
            cached = self.cache.get_step(key)
            if cached is None:
                raise NotFound(key)
            step = cached.step
            event = m.DemographicsCorrection(
                meta=m.new_meta(PRODUCER, self.trailer_id),
                correction_id=correction_id,
                accession_number=step.accession_number,
                scheduled_procedure_step_id=step.scheduled_procedure_step_id,
                patient_id=step.patient_id,
                patient_id_issuer=step.issuer_of_patient_id,
                corrected_patient_id=correction.patient_id,
                corrected_family_name=correction.family_name.upper(),
                corrected_given_names=correction.given_names.upper(),
                corrected_birth_date=correction.birth_date,
                corrected_sex=correction.sex,
                corrected_by=corrected_by,
                corrected_at=m.timestamp(now),
                reason=correction.reason,
            )
            conn.execute(
                "INSERT INTO corrections (correction_id, step_key, scheduled_date, fields,"
                " corrected_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    correction_id,
                    key,
                    step.scheduled_date,
                    self.cache.seal_text(
                        CORRECTION_FIELDS, (correction_id, key), json.dumps(correction.__dict__)
                    ),
                    corrected_by,
                    time.time(),
                ),
            )
            corrected = correction.apply(step)
            self.cache.put_step(conn, corrected, cached.source, cached.status)
            self.cache.enqueue(
                conn,
                topics.DEMOGRAPHICS_CORRECTION,
                step.accession_number,
                event.SerializeToString(),
            )
            self._announce(conn, "updated", corrected, Source.LOCAL)
        return event

    def purge(self) -> int:
        """Forget past days (data minimisation)."""
        removed = self.cache.purge_before(self.clock.today_str())
        if removed:
            metrics.PURGED_STEPS.inc(removed)
            log.info("purged steps of past days", extra={"steps": removed})
        return removed

    def update_gauges(self) -> None:
        counts = self.cache.count_by_status()
        for status in StepStatus:
            metrics.CACHE_STEPS.labels(status.value).set(counts.get(status.value, 0))
        last = self.last_sync()
        if last is not None:
            metrics.CACHE_AGE.set(max(0.0, time.time() - last))
        metrics.OUTBOX_PENDING.set(self.cache.outbox_size())

    # --- internals --------------------------------------------------------------------------
    def _overlay(self, step: ScheduledStep) -> ScheduledStep:
        """Corrections made on the trailer stay in force over later upstream data."""
        rows = self.cache._query(
            "SELECT correction_id, fields FROM corrections WHERE step_key = ? ORDER BY created_at",
            (step.key,),
        )
        for correction_id, fields in rows:
            text = self.cache.open_text(CORRECTION_FIELDS, (str(correction_id), step.key), fields)
            step = Correction(**json.loads(text)).apply(step)
        return step

    def _upsert(self, conn: object, step: ScheduledStep, source: Source) -> Change | None:
        step = self._overlay(step)
        cached = self.cache.get_step(step.key)
        if cached is not None and cached.step.content_hash() == step.content_hash():
            return None
        status = cached.status if cached else StepStatus.BOOKED
        self.cache.put_step(conn, step, source, status)  # type: ignore[arg-type]
        change = "added" if cached is None else "updated"
        self._announce(conn, change, step, source)
        return Change(change, step.key)

    def _announce(self, conn: object, change: str, step: ScheduledStep, source: Source) -> None:
        event = m.WorklistChanged(
            meta=m.new_meta(PRODUCER, self.trailer_id),
            change=_CHANGE[change],
            source=_SOURCE[source],
            site_code=step.scheduled_location or self.site.site_code,
            accession_number=step.accession_number,
            requested_procedure_id=step.requested_procedure_id,
            scheduled_procedure_step_id=step.scheduled_procedure_step_id,
            study_instance_uid=step.study_instance_uid,
            scheduled_station_ae_title=step.scheduled_station_ae_title,
        )
        start = self.scheduled_start(step)
        if start is not None:
            event.scheduled_start.CopyFrom(m.timestamp(start))
        self.cache.enqueue(
            conn,  # type: ignore[arg-type]
            topics.WORKLIST_CHANGED,
            step.accession_number,
            event.SerializeToString(),
        )
        metrics.WORKLIST_CHANGES.labels(change, source.value).inc()
        log.info(
            "worklist changed",
            extra={
                "change": change,
                "source": source.value,
                "accession_number": step.accession_number,
                "sps_id": step.scheduled_procedure_step_id,
            },
        )

    def scheduled_start(self, step: ScheduledStep) -> datetime | None:
        digits = (step.scheduled_time.replace(":", "").split(".")[0] + "000000")[:6]
        try:
            return datetime.strptime(step.scheduled_date + digits, "%Y%m%d%H%M%S").replace(
                tzinfo=self.clock.zone
            )
        except ValueError:
            return None
