"""The MWL C-FIND SCP with dcmtk's findscu as the modality, compared with dcmtk's
wlmscpfs serving the same worklist for the same queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from trailerlink_dicomnet import encoding
from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.waiting import wait_until
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import Source, to_dataset

from .conftest import STATION, booking, today, ymd

DAY = 120
SPS = "ScheduledProcedureStepSequence[0]"


def _fill(app: WorklistApp, count: int = DAY) -> list:  # type: ignore[type-arg]
    steps = [booking(i) for i in range(count)]
    first, last = app.worklist.window()
    app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
    return steps


@pytest.fixture(scope="module")
def day_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorklistApp, Wlmscpfs]]:
    """Our SCP and wlmscpfs, both serving the same day of 120 bookings."""
    from .conftest import settings_for

    tmp = tmp_path_factory.mktemp("cfind")
    app = WorklistApp(settings_for(tmp / "ours"))
    steps = _fill(app)
    app.scp.start()
    broker = Wlmscpfs(tmp / "wl", ae_title="REFERENCE", log_path=tmp / "wlmscpfs.log")
    for step in steps:
        ds = to_dataset(step)
        ds.SpecificCharacterSet = "ISO_IR 100"
        broker.write(step.accession_number, ds)
    broker.start()
    try:
        yield app, broker
    finally:
        broker.stop()
        app.scp.stop()
        app.cache.close()


def _ask(app: WorklistApp, broker: Wlmscpfs, keys: list[str | bytes]):  # type: ignore[no-untyped-def]
    ours = findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    reference = findscu("127.0.0.1", broker.port, "REFERENCE", keys)
    return ours, reference


def _summary(responses: list) -> dict[str, tuple[str, str, str]]:  # type: ignore[type-arg]
    out = {}
    for r in responses:
        sps = r.ScheduledProcedureStepSequence[0] if "ScheduledProcedureStepSequence" in r else None
        out[str(r.AccessionNumber).strip()] = (
            str(r.get("PatientName", "")).strip(),
            str(r.get("PatientID", "")).strip(),
            str(sps.get("ScheduledProcedureStepStartTime", "")).strip() if sps else "",
        )
    return out


RETURN_KEYS = [
    "AccessionNumber",
    "PatientName",
    "PatientID",
    f"{SPS}.ScheduledProcedureStepStartTime",
]


def _queries() -> list[tuple[str, list[str]]]:
    day = ymd(today())
    yesterday = ymd(today() - timedelta(days=1))
    return [
        (
            "day for this station",
            [
                f"{SPS}.Modality=MG",
                f"{SPS}.ScheduledStationAETitle={STATION}",
                f"{SPS}.ScheduledProcedureStepStartDate={day}",
            ],
        ),
        ("one NHS number", ["PatientID=9990000018"]),
        ("name wildcard", ["PatientName=TEST^A*"]),
        ("name single character wildcard", ["PatientName=TEST^?RAVO"]),
        ("accession number", ["AccessionNumber=ACC00007"]),
        (
            "time range",
            [
                f"{SPS}.ScheduledProcedureStepStartDate={day}",
                f"{SPS}.ScheduledProcedureStepStartTime=0900-1000",
            ],
        ),
        ("open time range", [f"{SPS}.ScheduledProcedureStepStartTime=-0830"]),
        ("open date range", [f"{SPS}.ScheduledProcedureStepStartDate={yesterday}-"]),
        (
            "combined date-time range",
            [
                f"{SPS}.ScheduledProcedureStepStartDate={yesterday}-{day}",
                f"{SPS}.ScheduledProcedureStepStartTime=0900-1000",
            ],
        ),
        ("another station", [f"{SPS}.ScheduledStationAETitle=OTHERSTATION"]),
        ("another day", [f"{SPS}.ScheduledProcedureStepStartDate=20000101"]),
    ]


@pytest.mark.parametrize("case", _queries(), ids=lambda c: c[0])
def test_answers_match_dcmtk_wlmscpfs(day_servers, case) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    _what, keys = case
    keys = keys + [k for k in RETURN_KEYS if not any(q.startswith(k) for q in keys)]
    ours, reference = _ask(app, broker, keys)
    assert ours.final_status == reference.final_status == "Success"
    assert _summary(ours.responses) == _summary(reference.responses)


def test_a_full_day_has_every_return_key_of_ihe_scheduled_workflow(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    keys = [
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "StudyInstanceUID",
        "ReferringPhysicianName",
        f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.ScheduledProcedureStepDescription",
        f"{SPS}.ScheduledStationAETitle",
        f"{SPS}.ScheduledProcedureStepStartDate",
        f"{SPS}.ScheduledProcedureStepStartTime",
        f"{SPS}.Modality",
    ]
    result = findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    assert result.final_status == "Success"
    assert len(result.responses) == DAY
    first = next(r for r in result.responses if r.AccessionNumber == "ACC00000")
    assert first.IssuerOfPatientID == "NHS" and first.PatientSex == "F"
    assert first.RequestedProcedureID == "RP00000"
    assert first.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.700000"
    sps = first.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepID, sps.Modality, sps.ScheduledStationAETitle) == (
        "SPS00000",
        "MG",
        STATION,
    )


def test_person_names_match_regardless_of_case_unlike_wlmscpfs(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    ours, reference = _ask(app, broker, ["PatientName=test^alpha", "AccessionNumber"])
    assert len(ours.responses) == DAY // 8
    assert reference.responses == []  # dcmtk matches names case-sensitively


def test_latin1_query_finds_and_returns_accented_names(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    keys: list[str | bytes] = [
        "SpecificCharacterSet=ISO_IR 100",
        "PatientName=TEST^ÅSA".encode("latin-1"),
        "AccessionNumber",
    ]
    ours, reference = _ask(app, broker, keys)
    assert len(ours.responses) == len(reference.responses) == DAY // 8
    for r in ours.responses:
        assert r.SpecificCharacterSet == "ISO_IR 100"
        assert str(r.PatientName) == "TEST^ÅSA"


def test_utf8_query_is_answered_in_utf8(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    result = findscu(
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        ["SpecificCharacterSet=ISO_IR 192", b"PatientName=TEST^ZO*", "AccessionNumber"],
    )
    assert len(result.responses) == DAY // 8
    for r in result.responses:
        assert r.SpecificCharacterSet == "ISO_IR 192"
        assert str(r.PatientName) == "TEST^ZOË"


def test_query_without_character_set_gets_the_default_for_accents(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    result = findscu(
        "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", ["PatientName=TEST^*", "PatientID=9990000050"]
    )
    assert result.responses
    assert all(r.SpecificCharacterSet == "ISO_IR 100" for r in result.responses)
    assert {str(r.PatientName) for r in result.responses} == {"TEST^ÅSA"}


def test_no_match_is_an_empty_success(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    result = findscu(
        "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", ["PatientID=9990000999", "PatientName"]
    )
    assert result.responses == []
    assert result.final_status == "Success"


def test_cancel_stops_the_answers(day_servers, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    answer = app.scp.answers.answer
    built = [0]

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        # Kept answers go out faster than findscu's C-CANCEL can arrive: before the
        # third answer, wait until the association has received the cancel.
        built[0] += 1
        if built[0] == 3:
            wait_until(
                lambda: any(a.dimse.cancel_req for a in app.scp._server.active_associations),
                20,
                "C-CANCEL received",
            )
        return answer(*args, **kwargs)

    monkeypatch.setattr(app.scp.answers, "answer", held)
    result = findscu(
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        ["PatientName", "AccessionNumber", f"{SPS}.Modality=MG"],
        cancel_after=2,
    )
    assert result.final_status == "Cancel", result.log[-2000:]
    assert 2 <= len(result.responses) < DAY


def test_malformed_identifier_is_refused(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    result = findscu(
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        [f"{SPS}.ScheduledProcedureStepStartDate=2026-13-45-99", "PatientName"],
    )
    assert result.responses == []
    assert result.final_status not in ("Success", "")


def test_empty_cache_answers_empty(scp_app: WorklistApp, tmp_path: Path) -> None:
    result = findscu("127.0.0.1", scp_app.scp.port, "TRAILERLINK_MWL", ["PatientName"])
    assert result.final_status == "Success"
    assert result.responses == []


def test_repeated_queries_reuse_encoded_answers_and_stay_correct(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    keys = [f"{SPS}.Modality=MG", "PatientName", "AccessionNumber", "PatientID"]
    findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    before = encoding.REUSED[0]
    ours, reference = _ask(app, broker, keys)
    assert encoding.REUSED[0] - before == DAY
    assert _summary(ours.responses) == _summary(reference.responses)


def test_a_poll_that_changes_nothing_keeps_the_encoded_answers(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    keys = [f"{SPS}.Modality=MG", "PatientName", "AccessionNumber"]
    findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    steps_generation, generation = app.cache.steps_generation, app.cache.generation
    _fill(app)  # the upstream poll: same day, nothing changed
    assert app.cache.generation > generation
    assert app.cache.steps_generation == steps_generation
    before = encoding.REUSED[0]
    ours, reference = _ask(app, broker, keys)
    assert encoding.REUSED[0] - before == DAY
    assert _summary(ours.responses) == _summary(reference.responses)


def test_a_changed_step_is_answered_anew_and_the_others_are_reused(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, _broker = day_servers
    keys = [f"{SPS}.Modality=MG", "PatientName", "AccessionNumber", "PatientID"]
    findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    steps_generation = app.cache.steps_generation
    changed = booking(5, patient_id="9990000093")
    try:
        app.worklist.upsert(changed, Source.DICOM_MWL)
        assert app.cache.steps_generation == steps_generation + 1
        before = encoding.REUSED[0]
        result = findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
        assert encoding.REUSED[0] - before == DAY - 1
        ids = {str(r.AccessionNumber): str(r.PatientID) for r in result.responses}
        assert ids[changed.accession_number] == "9990000093"
    finally:
        app.worklist.upsert(booking(5), Source.DICOM_MWL)


def test_sps_keys_a_modality_sends_at_the_top_level_match_as_if_in_the_sequence(
    day_servers,
) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    day = ymd(today())
    keys = [
        "Modality=MG",
        f"ScheduledStationAETitle={STATION}",
        f"ScheduledProcedureStepStartDate={day}",
        "AccessionNumber",
    ]
    ours, reference = _ask(app, broker, keys)
    assert ours.final_status == "Success"
    assert len(ours.responses) == len(reference.responses) == DAY  # wlmscpfs ignores them
    assert {str(r.Modality) for r in ours.responses} == {"MG"}  # answered where asked
    assert "ScheduledProcedureStepSequence" not in ours.responses[0]
    other = findscu(
        "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", ["Modality=CT", "AccessionNumber"]
    )
    assert other.final_status == "Success" and other.responses == []


def test_unknown_keys_are_ignored_like_wlmscpfs(day_servers) -> None:  # type: ignore[no-untyped-def]
    app, broker = day_servers
    keys = ["PatientAge=045Y", "(0009,0010)=ACME", "MedicalAlerts=none", "AccessionNumber"]
    ours, reference = _ask(app, broker, keys)
    assert ours.final_status == "Success"
    assert len(ours.responses) == len(reference.responses) == DAY
