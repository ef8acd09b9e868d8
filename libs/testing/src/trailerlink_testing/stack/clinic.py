"""The synthetic clinic day: the women booked at the trailer's site (TEST^ names, NHS
numbers from the 999 test range) and the worklist items the Trust's worklist broker
(dcmtk ``wlmscpfs``) holds for them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset

from trailerlink_testing.stack.names import _UID_PREFIX


def _nhs_number(serial: int) -> str:
    """A valid NHS number in the 999 test range (modulus 11 check digit)."""
    while True:
        body = f"999{serial % 1_000_000:06d}"
        check = 11 - sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return body + str(check)
        serial += 1


@dataclass(frozen=True)
class Booking:
    """One woman booked at this trailer's site today (synthetic)."""

    accession_number: str
    patient_name: str
    patient_id: str
    birth_date: str
    study_instance_uid: str
    sps_id: str
    requested_procedure_id: str
    scheduled_time: str


def synthetic_day(women: int, seed: int = 0) -> list[Booking]:
    """``women`` bookings for today: TEST^ names, 999 NHS numbers, distinct birth dates."""
    out = []
    for i in range(women):
        n = seed * 1000 + i
        out.append(
            Booking(
                accession_number=f"DEMO{n:06d}",
                patient_name=f"TESTDEMO^WOMAN{n:04d}",
                patient_id=_nhs_number(100_000 + n * 7),
                birth_date=f"19{55 + n % 20:02d}{1 + n % 12:02d}{1 + n % 27:02d}",
                study_instance_uid=f"{_UID_PREFIX}42.{seed}.{i + 1}",
                sps_id=f"SPS{n:06d}",
                requested_procedure_id=f"RP{n:06d}",
                scheduled_time=f"{8 + (i // 6) % 10:02d}{(i % 6) * 10:02d}00",
            )
        )
    return out


def _today() -> str:
    return dt.datetime.now(ZoneInfo("Europe/London")).strftime("%Y%m%d")


def _worklist_item(b: Booking, station: str, site: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.AccessionNumber = b.accession_number
    ds.ReferringPhysicianName = "SCREENING^OFFICE"
    ds.PatientName = b.patient_name
    ds.PatientID = b.patient_id
    ds.IssuerOfPatientID = "NHS"
    ds.PatientBirthDate = b.birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = b.study_instance_uid
    ds.RequestedProcedureID = b.requested_procedure_id
    ds.RequestedProcedureDescription = "Breast screening mammography"
    sps = Dataset()
    sps.Modality = "MG"
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = _today()
    sps.ScheduledProcedureStepStartTime = b.scheduled_time
    sps.ScheduledProcedureStepDescription = "Screening 4 views"
    sps.ScheduledProcedureStepID = b.sps_id
    sps.ScheduledProcedureStepLocation = site
    ds.ScheduledProcedureStepSequence = [sps]
    return ds
