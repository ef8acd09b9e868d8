"""Fixtures of the worklist tests: synthetic bookings, an in-process worklist, and a
capture of every log record the suite produces (scanned for patient data at the end).

Synthetic data only: TEST^ names and NHS numbers from the 999 test range.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_testing.ports import free_port
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import ScheduledStep
from trailerlink_worklist.settings import WorklistSettings
from trailerlink_worklist.upstream.hl7_listener import Hl7Listener
from trailerlink_worklist.worklist import Clock

NHS_NUMBERS = (
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
    "9990000069",
    "9990000077",
    "9990000085",
)
NAMES = (
    "TEST^ALPHA",
    "TEST^BRAVO",
    "TEST^CHARLIE",
    "TESTER^DELTA",
    "TEST^ÅSA",
    "TEST^ZOË",
    "TESTING^ECHO",
    "TEST^FOXTROT",
)
BIRTH_DATES = (
    "19700101",
    "19650315",
    "19580720",
    "19721231",
    "19690229",
    "19600101",
    "19550505",
    "19711111",
)
# Made-up women with the letters that broke the worklist before (issue #18): Welsh ŵ ŷ â,
# Irish Ó á, German ü, Polish ł, Greek. Each is what the source means, in DICOM PN form.
WELSH = "Llewelyn^Siân"
WELSH_2 = "Prŷs-Ffŵrn^Gwenllŷn"
IRISH = "Ó Súilleabháin^Aoibhínn"
GERMAN = "Grünwald-Testerin^Jülie"
POLISH = "Wałęsowa-Testowa^Łucja"
GREEK = "Παπαδοπούλου^Ελένη"
UNICODE_NAMES = (WELSH, WELSH_2, IRISH, GERMAN, POLISH, GREEK)
SITE = "SITE-TRL01"
STATION = "MGTRAILER1"


class LogCapture(logging.Handler):
    """Keeps every record's message, extra fields and exception text, unredacted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extras = {
                k: v
                for k, v in record.__dict__.items()
                if k not in logging.makeLogRecord({}).__dict__
            }
            text = f"{record.name} {record.getMessage()} {extras}"
            if record.exc_info:
                text += " " + logging.Formatter().formatException(record.exc_info)
            self.lines.append(text)
        except Exception:  # a log call must never break a test
            self.lines.append(f"{record.name} <unformattable>")


_CAPTURE = LogCapture()


@pytest.fixture(scope="session", autouse=True)
def captured_logs() -> Iterator[LogCapture]:
    """Every log record of the worklist suite (the last test scans them)."""
    root = logging.getLogger()
    root.addHandler(_CAPTURE)
    previous = root.level
    root.setLevel(logging.INFO)
    # pynetdicom at DEBUG prints PDUs and identifiers: exactly what must not leak.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG)
    try:
        yield _CAPTURE
    finally:
        root.removeHandler(_CAPTURE)
        root.setLevel(previous)


def today() -> date:
    return Clock().today()


def ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def booking(
    i: int, *, day: date | None = None, time: str | None = None, **changes: str
) -> ScheduledStep:
    """Synthetic booking number ``i`` for this trailer (today by default)."""
    day = day or today()
    step = ScheduledStep(
        accession_number=f"ACC{i:05d}",
        scheduled_procedure_step_id=f"SPS{i:05d}",
        scheduled_date=ymd(day),
        scheduled_time=time or f"{8 + (i // 12) % 10:02d}{(i % 12) * 5:02d}00",
        patient_name=NAMES[i % len(NAMES)],
        patient_id=NHS_NUMBERS[i % len(NHS_NUMBERS)],
        issuer_of_patient_id="NHS",
        patient_birth_date=BIRTH_DATES[i % len(BIRTH_DATES)],
        patient_sex="F",
        requested_procedure_id=f"RP{i:05d}",
        requested_procedure_description="Breast screening mammography",
        study_instance_uid=f"1.2.826.0.1.3680043.8.498.7{i:05d}",
        referring_physician_name="SCREENING^OFFICE",
        modality="MG",
        scheduled_station_ae_title=STATION,
        scheduled_location=SITE,
        scheduled_step_description="Screening 4 views",
    )
    return step.replace(**changes) if changes else step


def key_file(directory: Path) -> Path:
    """A worklist key file in ``directory``, made once: an app reopened there reads its
    cache with the same key."""
    path = directory / "worklist.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        SpoolKey.generate().write_file(path)
    return path


def settings_for(tmp: Path, **overrides: object) -> WorklistSettings:
    values: dict[str, object] = {
        "data_dir": tmp,
        "worklist_key_file": key_file(tmp),
        "dicom_host": "127.0.0.1",
        "dicom_port": free_port(),
        "hl7_listen_host": "127.0.0.1",
        "hl7_listen_port": free_port(),
        "site_code": SITE,
        "station_ae_titles": STATION,
        "upstream": "none",
        "trailer_id": "trailer-test",
        "upstream_poll_seconds": 0.5,
        "upstream_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return WorklistSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator:
    """Build a WorklistApp (not started) in ``tmp_path``; closed at teardown."""
    apps: list[WorklistApp] = []

    def make(**overrides: object) -> WorklistApp:
        app = WorklistApp(settings_for(tmp_path / f"app{len(apps)}", **overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.scp.stop()
        app.cache.close()


@pytest.fixture
def scp_app(make_app) -> WorklistApp:  # type: ignore[no-untyped-def]
    """A WorklistApp whose DICOM SCP is listening, with an empty cache."""
    app = make_app()
    app.scp.start()
    return app


@contextlib.asynccontextmanager
async def hl7_listening(app: WorklistApp) -> AsyncIterator[tuple[WorklistApp, Hl7Listener]]:
    """``app``'s HL7 listener, started for the block and closed after it."""
    assert isinstance(app.upstream, Hl7Listener)
    await app.upstream.start()
    try:
        yield app, app.upstream
    finally:
        await app.upstream.close()
