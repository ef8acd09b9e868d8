"""Runs last (by name): every log record the worklist suite produced, unredacted, holds
no name, NHS number or birth date of the synthetic women it handled.

It exercises the paths that see patient data once more itself (C-FIND, MPPS, HL7,
corrections, a refused message) so that it means something when run alone too.
"""

from __future__ import annotations

import asyncio

from trailerlink_testing import hl7 as hl7client
from trailerlink_testing.dcmtk import findscu
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.corrections import Correction
from trailerlink_worklist.model import Source
from trailerlink_worklist.upstream.hl7_listener import Hl7Listener

from .conftest import BIRTH_DATES, NAMES, NHS_NUMBERS, UNICODE_NAMES, LogCapture, booking
from .test_hl7_listener import siu
from .test_mpps import _uid, completion, create_attrs

FORBIDDEN = (
    *NAMES,
    *NHS_NUMBERS,
    *BIRTH_DATES,
    "TEST^",
    "TESTER^",
    "TESTING^",
    *UNICODE_NAMES,
    *(n.split("^")[0] for n in UNICODE_NAMES),
    "ALPHONSINE",
    "CHARLOTTE",
    "TESTONE",
    "TESTCORRECTED",
)


async def test_no_patient_data_in_any_log_line(make_app, captured_logs: LogCapture) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(upstream="hl7")
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(i) for i in range(8)], Source.DICOM_MWL, first, last)
    app.scp.start()
    await asyncio.to_thread(
        findscu,
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        ["PatientName=TEST*", "PatientID", "PatientBirthDate"],
    )
    uid = _uid()
    app.mpps.create(uid, create_attrs(0))
    app.mpps.update(uid, completion()[0])
    app.worklist.correct(
        booking(1).key, Correction(family_name="TESTCORRECTED", reason="typo"), "radiographer9"
    )
    listener = app.upstream
    assert isinstance(listener, Hl7Listener)
    await listener.start()
    try:
        for message in (siu("S12", "LOGAPPT"), siu("S12").replace("19700101", "19701399")):
            await asyncio.to_thread(hl7client.send, "127.0.0.1", listener.port, message)
    finally:
        await listener.close()

    assert len(captured_logs.lines) > 10
    leaks = [line for line in captured_logs.lines if any(secret in line for secret in FORBIDDEN)]
    # Name only the loggers: the lines themselves must not reach the test output.
    assert not leaks, (
        f"{len(leaks)} log lines carry patient data, from loggers "
        f"{sorted({line.split(' ', 1)[0] for line in leaks})}"
    )
