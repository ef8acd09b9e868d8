"""The canary's synthetic object and the heartbeat fields, without a network: a marked
test patient with fresh UIDs each time, a valid MG image, and the last result and the
certificate expiry carried in the heartbeat."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import dcmread
from trailerlink_monitor.agent.canary import (
    CANARY_PATIENT_ID_PREFIX,
    MG_FOR_PRESENTATION,
    CanaryResult,
    build_canary,
)
from trailerlink_monitor.agent.heartbeat import build_heartbeat


def test_each_canary_is_a_new_synthetic_mammogram_of_the_test_patient() -> None:
    first, second = build_canary("trailer-01"), build_canary("trailer-01")
    assert first.PatientName == "ZZTEST^CANARY"
    assert first.PatientID == CANARY_PATIENT_ID_PREFIX + "trailer-01"
    assert not first.PatientBirthDate  # no date of birth at all, not even a fake one
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert first[uid].value != second[uid].value
    # It round-trips as a Part 10 file and decodes as a 64 x 64 12-bit MG image.
    buffer = io.BytesIO()
    first.save_as(buffer, enforce_file_format=True)
    back = dcmread(io.BytesIO(buffer.getvalue()))
    assert back.SOPClassUID == MG_FOR_PRESENTATION
    assert back.pixel_array.shape == (64, 64) and int(back.pixel_array.max()) < 4096
    # A long trailer id cannot make the PatientID longer than LO allows.
    assert len(build_canary("t" * 100).PatientID) == 64


def test_the_heartbeat_carries_the_last_canary_and_the_certificate_expiry(tmp_path: Path) -> None:
    result = CanaryResult(
        ok=False, seconds=600.5, at=1_800_000_000.25, outcome="timeout", sop_instance_uid="2.25.1"
    )
    hb = build_heartbeat(
        "trailer-01", 7, {}, tmp_path, certificate_not_after=1_900_000_000, canary=result
    )
    assert hb.HasField("canary_at") and not hb.canary_ok
    assert hb.canary_seconds == 600.5
    assert (hb.canary_at.seconds, hb.canary_at.nanos) == (1_800_000_000, 250_000_000)
    assert hb.client_certificate_not_after.seconds == 1_900_000_000
    # Before the first canary and without a readable certificate: neither is set, so the
    # fleet does not show a canary that never ran as failing.
    empty = build_heartbeat("trailer-01", 8, {}, tmp_path)
    assert not empty.HasField("canary_at")
    assert not empty.HasField("client_certificate_not_after")
