"""The worklist's own vocabulary: a scheduled procedure step and what can happen to it.

Nothing here knows about DICOM networking, HL7 or SQLite. A :class:`ScheduledStep` is
one appointment on one modality (one Scheduled Procedure Step), as the modality will
see it; :func:`to_dataset` gives its MWL attributes.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import uuid
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

# Our UID root for identifiers we must make up (UUID-derived, PS3.5 B.2).
_UID_NAMESPACE = uuid.UUID("5f0b6c1e-2a39-4a53-9e1f-7c1d7a3e2b90")


class StepStatus(enum.StrEnum):
    """Where an appointment is in the day, as the staff page shows it."""

    BOOKED = "booked"
    ARRIVED = "arrived"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"
    DID_NOT_ATTEND = "did_not_attend"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Source(enum.StrEnum):
    DICOM_MWL = "dicom_mwl"
    HL7 = "hl7"
    LOCAL = "local"


@dataclass(frozen=True)
class ScheduledStep:
    """One scheduled procedure step with the IHE Scheduled Workflow return keys.

    Text is held as Python ``str`` (already decoded from whatever character set the
    upstream used); person names in DICOM ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`` form;
    dates ``YYYYMMDD``; times ``HHMMSS``.
    """

    accession_number: str
    scheduled_procedure_step_id: str
    scheduled_date: str
    patient_name: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    study_instance_uid: str = ""
    referring_physician_name: str = ""
    scheduled_time: str = ""
    modality: str = ""
    scheduled_station_ae_title: str = ""
    scheduled_station_name: str = ""
    scheduled_location: str = ""
    scheduled_step_description: str = ""
    scheduled_performing_physician_name: str = ""
    requested_procedure_priority: str = ""
    admission_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the step in the cache: accession number and SPS ID."""
        return step_key(self.accession_number, self.scheduled_procedure_step_id)

    def replace(self, **changes: object) -> ScheduledStep:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_defaults(self) -> ScheduledStep:
        """Fill what a modality needs and upstream may omit (a stable Study UID)."""
        if self.study_instance_uid:
            return self
        return self.replace(study_instance_uid=derived_uid("study", self.accession_number))

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ScheduledStep:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def content_hash(self) -> str:
        return hashlib.sha256(self.as_json().encode()).hexdigest()


def step_key(accession_number: str, sps_id: str) -> str:
    return f"{accession_number}|{sps_id}"


def derived_uid(kind: str, value: str) -> str:
    """A stable UID for ``value`` (same input, same UID) under the 2.25 root."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{kind}:{value}').int}"


# Scheduled Procedure Step Status (0040,0020) for each of our statuses (PS3.3 C.4.10).
SPS_STATUS = {
    StepStatus.BOOKED: "SCHEDULED",
    StepStatus.ARRIVED: "ARRIVED",
    StepStatus.IN_PROGRESS: "STARTED",
    StepStatus.COMPLETED: "COMPLETED",
    StepStatus.DISCONTINUED: "DISCONTINUED",
    StepStatus.DID_NOT_ATTEND: "CANCELED",
}


def to_dataset(step: ScheduledStep, status: StepStatus = StepStatus.BOOKED) -> Dataset:
    """The MWL attributes of ``step`` (unicode values; no Specific Character Set)."""
    ds = Dataset()
    ds.AccessionNumber = step.accession_number
    ds.ReferringPhysicianName = step.referring_physician_name
    ds.PatientName = step.patient_name
    ds.PatientID = step.patient_id
    ds.IssuerOfPatientID = step.issuer_of_patient_id
    ds.PatientBirthDate = step.patient_birth_date
    ds.PatientSex = step.patient_sex
    ds.StudyInstanceUID = step.study_instance_uid
    ds.RequestedProcedureID = step.requested_procedure_id
    ds.RequestedProcedureDescription = step.requested_procedure_description
    ds.RequestedProcedurePriority = step.requested_procedure_priority
    ds.AdmissionID = step.admission_id
    ds.ReferencedStudySequence = []
    ds.ReferencedPatientSequence = []
    sps = Dataset()
    sps.Modality = step.modality
    sps.ScheduledStationAETitle = step.scheduled_station_ae_title
    sps.ScheduledProcedureStepStartDate = step.scheduled_date
    sps.ScheduledProcedureStepStartTime = step.scheduled_time
    sps.ScheduledPerformingPhysicianName = step.scheduled_performing_physician_name
    sps.ScheduledProcedureStepDescription = step.scheduled_step_description
    sps.ScheduledProcedureStepID = step.scheduled_procedure_step_id
    sps.ScheduledStationName = step.scheduled_station_name
    sps.ScheduledProcedureStepLocation = step.scheduled_location
    sps.ScheduledProcedureStepStatus = SPS_STATUS[status]
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple):  # a multi-valued element: keep the first
        value = value[0] if value else ""
    return str(value).strip()


def from_dataset(ds: Dataset) -> list[ScheduledStep]:
    """The scheduled steps an MWL C-FIND answer (or .wl file) describes, one per SPS item.

    Raises ``ValueError`` when a step lacks its identity (accession number, SPS ID or
    start date).
    """
    items = list(ds.get("ScheduledProcedureStepSequence", []) or [])
    if not items:
        raise ValueError("no Scheduled Procedure Step Sequence item")
    steps = []
    for sps in items:
        step = ScheduledStep(
            accession_number=_text(ds, "AccessionNumber"),
            scheduled_procedure_step_id=_text(sps, "ScheduledProcedureStepID"),
            scheduled_date=_text(sps, "ScheduledProcedureStepStartDate"),
            patient_name=_text(ds, "PatientName"),
            patient_id=_text(ds, "PatientID"),
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
            requested_procedure_id=_text(ds, "RequestedProcedureID"),
            requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            referring_physician_name=_text(ds, "ReferringPhysicianName"),
            scheduled_time=_text(sps, "ScheduledProcedureStepStartTime"),
            modality=_text(sps, "Modality"),
            scheduled_station_ae_title=_text(sps, "ScheduledStationAETitle"),
            scheduled_station_name=_text(sps, "ScheduledStationName"),
            scheduled_location=_text(sps, "ScheduledProcedureStepLocation"),
            scheduled_step_description=_text(sps, "ScheduledProcedureStepDescription"),
            scheduled_performing_physician_name=_text(sps, "ScheduledPerformingPhysicianName"),
            requested_procedure_priority=_text(ds, "RequestedProcedurePriority"),
            admission_id=_text(ds, "AdmissionID"),
        )
        if not (step.accession_number and step.scheduled_procedure_step_id):
            raise ValueError("step without accession number or SPS ID")
        if len(step.scheduled_date) != 8 or not step.scheduled_date.isdigit():
            raise ValueError("step without a valid SPS start date")
        steps.append(step.with_defaults())
    return steps


@dataclass(frozen=True)
class SiteFilter:
    """Which steps belong on this trailer (everything else never reaches the cache)."""

    site_code: str = ""
    station_ae_titles: tuple[str, ...] = ()
    modality: str = ""

    def accepts(self, step: ScheduledStep) -> bool:
        if self.site_code and step.scheduled_location != self.site_code:
            return False
        if (
            self.station_ae_titles
            and step.scheduled_station_ae_title
            and step.scheduled_station_ae_title not in self.station_ae_titles
        ):
            return False
        return not (self.modality and step.modality and step.modality != self.modality)

    def complete(self, step: ScheduledStep) -> ScheduledStep:
        """Fill station AE and modality for a feed (HL7) that does not carry them."""
        changes: dict[str, str] = {}
        if not step.scheduled_station_ae_title and len(self.station_ae_titles) == 1:
            changes["scheduled_station_ae_title"] = self.station_ae_titles[0]
        if not step.modality and self.modality:
            changes["modality"] = self.modality
        return step.replace(**changes) if changes else step
