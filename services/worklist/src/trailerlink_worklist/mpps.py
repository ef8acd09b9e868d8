"""Modality Performed Procedure Step: the state machine and what each step changes.

IN PROGRESS (N-CREATE) -> COMPLETED or DISCONTINUED (N-SET); nothing after that
(PS3.4 F.7.2); N-GET reads an instance back. Each accepted request updates the
scheduled step it refers to and queues a ProcedureStepUpdated event, in one durable
transaction, before the modality hears "success". No network here: the DICOM edge
(``scp.py``) maps :class:`MppsRefused` to a status.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from trailerlink_events import messages as m
from trailerlink_events import topics

from trailerlink_worklist import statuses
from trailerlink_worklist.cache import MPPS_CREATE, MPPS_FINAL, Cache
from trailerlink_worklist.model import StepStatus
from trailerlink_worklist.worklist import Clock

log = logging.getLogger(__name__)

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
FINAL = frozenset({COMPLETED, DISCONTINUED})
_EVENT_STATUS = {
    IN_PROGRESS: m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_IN_PROGRESS,
    COMPLETED: m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
    DISCONTINUED: m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_DISCONTINUED,
}
_STEP_STATUS = {
    IN_PROGRESS: StepStatus.IN_PROGRESS,
    COMPLETED: StepStatus.COMPLETED,
    DISCONTINUED: StepStatus.DISCONTINUED,
}
# Attributes an N-SET may not change (PS3.4 Table F.7.2-1: "Not allowed" in N-SET).
_NOT_SETTABLE = (
    "ScheduledStepAttributesSequence",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PerformedStationAETitle",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "Modality",
    "StudyID",
)


class MppsRefused(Exception):
    """The request is refused with ``status`` (and, for some, an Error ID)."""

    def __init__(self, status: int, comment: str, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id


@dataclass(frozen=True)
class MppsRecord:
    uid: str
    status: str
    step_key: str
    create_attrs: Dataset
    attrs: Dataset
    upstream_state: str


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


class MppsStore:
    """Accepts N-CREATE and N-SET for performed procedure steps."""

    def __init__(
        self, cache: Cache, trailer_id: str, clock: Clock, require_end_time: bool = True
    ) -> None:
        self.cache = cache
        self.trailer_id = trailer_id
        self.clock = clock
        self.require_end_time = require_end_time

    def get(self, uid: str) -> MppsRecord | None:
        rows = self.cache._query(
            "SELECT uid, status, step_key, create_attrs, final_attrs, upstream_state"
            " FROM mpps WHERE uid = ?",
            (uid,),
        )
        if not rows:
            return None
        uid_, status, key, create, attrs, upstream = rows[0]
        row = (str(uid_), str(key))
        return MppsRecord(
            str(uid_),
            str(status),
            str(key),
            Dataset.from_json(json.loads(self.cache.open_text(MPPS_CREATE, row, create))),
            Dataset.from_json(json.loads(self.cache.open_text(MPPS_FINAL, row, attrs))),
            str(upstream),
        )

    def attributes(self, uid: str, tags: list[int] | None = None) -> Dataset:
        """N-GET: the instance's attributes, only ``tags`` if given (PS3.4 F.7.2.3; an
        empty list means all). A requested attribute the instance has no value for is
        returned empty. Raises :class:`MppsRefused` for an unknown instance."""
        record = self.get(uid)
        if record is None:
            raise MppsRefused(statuses.NO_SUCH_OBJECT_INSTANCE, "no such MPPS instance")
        stored = record.attrs
        if not tags:
            return stored
        out = Dataset()
        for tag in tags:
            if tag in stored:
                out[tag] = stored[tag]
            else:
                out.add_new(tag, dictionary_VR(tag), None)
        return out

    def create(self, uid: str, attrs: Dataset) -> m.ProcedureStepUpdated:
        """N-CREATE: a new step IN PROGRESS. Raises :class:`MppsRefused`."""
        status = _text(attrs, "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            raise MppsRefused(
                statuses.INVALID_ATTRIBUTE_VALUE,
                "Performed Procedure Step Status must be IN PROGRESS",
            )
        if "ScheduledStepAttributesSequence" not in attrs:
            raise MppsRefused(
                statuses.MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence missing"
            )
        ssa = list(attrs.ScheduledStepAttributesSequence or [])
        ref = ssa[0] if ssa else Dataset()
        with self.cache.transaction() as conn:
            if self.get(uid) is not None:
                raise MppsRefused(statuses.DUPLICATE_SOP_INSTANCE, "MPPS instance exists")
            step = self.cache.find_step(
                accession_number=_text(ref, "AccessionNumber"),
                sps_id=_text(ref, "ScheduledProcedureStepID"),
                study_instance_uid=_text(ref, "StudyInstanceUID"),
            )
            key = step.step.key if step else ""
            date = step.step.scheduled_date if step else self.clock.today_str()
            text = json.dumps(attrs.to_json_dict())
            now = time.time()
            conn.execute(
                "INSERT INTO mpps (uid, status, step_key, scheduled_date, create_attrs,"
                " final_attrs, upstream_state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'none', ?, ?)",
                (
                    uid,
                    IN_PROGRESS,
                    key,
                    date,
                    self.cache.seal_text(MPPS_CREATE, (uid, key), text),
                    self.cache.seal_text(MPPS_FINAL, (uid, key), text),
                    now,
                    now,
                ),
            )
            if step is not None:
                self.cache.set_status(conn, key, StepStatus.IN_PROGRESS)
            event = self._event(uid, attrs)
            self.cache.enqueue(
                conn,
                topics.PROCEDURE_STEP,
                event.study_instance_uid or uid,
                event.SerializeToString(),
            )
        log.info("MPPS in progress", extra={"mpps_uid": uid, "scheduled": step is not None})
        return event

    def update(self, uid: str, mods: Dataset) -> tuple[Dataset, m.ProcedureStepUpdated]:
        """N-SET: update an IN PROGRESS step, possibly to COMPLETED/DISCONTINUED.

        Returns the whole stored dataset and the event. Raises :class:`MppsRefused`.
        """
        with self.cache.transaction() as conn:
            record = self.get(uid)
            if record is None:
                raise MppsRefused(statuses.NO_SUCH_OBJECT_INSTANCE, "no such MPPS instance")
            if record.status in FINAL:
                raise MppsRefused(
                    statuses.PROCESSING_FAILURE,
                    "Performed Procedure Step Object may no longer be updated",
                    statuses.ERROR_ID_MAY_NO_LONGER_BE_UPDATED,
                )
            for keyword in _NOT_SETTABLE:
                if keyword in mods:
                    raise MppsRefused(
                        statuses.PROCESSING_FAILURE, f"{keyword} may not be set by N-SET"
                    )
            new_status = _text(mods, "PerformedProcedureStepStatus") or record.status
            if new_status not in _EVENT_STATUS:
                raise MppsRefused(
                    statuses.INVALID_ATTRIBUTE_VALUE,
                    "Performed Procedure Step Status must be IN PROGRESS,"
                    " COMPLETED or DISCONTINUED",
                )
            attrs = record.attrs
            for elem in mods:
                attrs[elem.tag] = elem
            if (
                new_status in FINAL
                and self.require_end_time
                and not (
                    _text(attrs, "PerformedProcedureStepEndDate")
                    and _text(attrs, "PerformedProcedureStepEndTime")
                )
            ):
                raise MppsRefused(
                    statuses.MISSING_ATTRIBUTE_VALUE,
                    "End Date and Time are required to complete a step",
                )
            conn.execute(
                "UPDATE mpps SET status = ?, final_attrs = ?, updated_at = ? WHERE uid = ?",
                (
                    new_status,
                    self.cache.seal_text(
                        MPPS_FINAL, (uid, record.step_key), json.dumps(attrs.to_json_dict())
                    ),
                    time.time(),
                    uid,
                ),
            )
            if record.step_key and self.cache.get_step(record.step_key) is not None:
                self.cache.set_status(conn, record.step_key, _STEP_STATUS[new_status])
            event = self._event(uid, attrs)
            self.cache.enqueue(
                conn,
                topics.PROCEDURE_STEP,
                event.study_instance_uid or uid,
                event.SerializeToString(),
            )
        log.info(
            "MPPS updated",
            extra={
                "mpps_uid": uid,
                "status": new_status,
                "instances": len(event.performed_instances),
            },
        )
        return attrs, event

    def set_upstream_state(self, uid: str, state: str) -> None:
        with self.cache.transaction() as conn:
            conn.execute("UPDATE mpps SET upstream_state = ? WHERE uid = ?", (state, uid))

    def _event(self, uid: str, attrs: Dataset) -> m.ProcedureStepUpdated:
        ssa = list(attrs.get("ScheduledStepAttributesSequence", []) or [])
        ref = ssa[0] if ssa else Dataset()
        status = _text(attrs, "PerformedProcedureStepStatus")
        event = m.ProcedureStepUpdated(
            meta=m.new_meta("worklist", self.trailer_id),
            mpps_sop_instance_uid=uid,
            status=_EVENT_STATUS[status],
            study_instance_uid=_text(ref, "StudyInstanceUID"),
            accession_number=_text(ref, "AccessionNumber"),
            scheduled_procedure_step_id=_text(ref, "ScheduledProcedureStepID"),
            modality=_text(attrs, "Modality"),
            performed_station_ae_title=_text(attrs, "PerformedStationAETitle"),
            performed_instances=performed_instances(attrs),
        )
        started = self._moment(
            attrs, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"
        )
        if started:
            event.started_at.CopyFrom(m.timestamp(started))
        ended = self._moment(
            attrs, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"
        )
        if ended and status in FINAL:
            event.ended_at.CopyFrom(m.timestamp(ended))
        if status == DISCONTINUED:
            codes = list(
                attrs.get("PerformedProcedureStepDiscontinuationReasonCodeSequence", []) or []
            )
            if codes:
                event.discontinuation_reason_code = _text(codes[0], "CodeValue")
        return event

    def _moment(self, attrs: Dataset, date_kw: str, time_kw: str) -> datetime | None:
        day, clock = _text(attrs, date_kw), _text(attrs, time_kw).replace(":", "")
        if not day:
            return None
        clock = (clock.split(".")[0] + "000000")[:6]
        try:
            return datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=self.clock.zone)
        except ValueError:
            return None


def performed_instances(attrs: Dataset) -> list[m.PerformedInstance]:
    """The images (and other objects) the Performed Series Sequence says were taken."""
    found = []
    for series in attrs.get("PerformedSeriesSequence", []) or []:
        series_uid = _text(series, "SeriesInstanceUID")
        for keyword in (
            "ReferencedImageSequence",
            "ReferencedNonImageCompositeSOPInstanceSequence",
        ):
            for ref in series.get(keyword, []) or []:
                found.append(
                    m.PerformedInstance(
                        series_instance_uid=series_uid,
                        sop_class_uid=_text(ref, "ReferencedSOPClassUID"),
                        sop_instance_uid=_text(ref, "ReferencedSOPInstanceUID"),
                    )
                )
    return found
