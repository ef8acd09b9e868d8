"""`trailerlinkctl worklist show` against a real trailerlink-worklist process: masked by
default, names with --show-names and an audit record (whose log line carries no names),
bad dates and missing credentials give a clear message and a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script
from trailerlink_worklist.atrest import FieldCipher
from trailerlink_worklist.cache import Cache
from trailerlink_worklist.model import ScheduledStep, SiteFilter, Source, StepStatus
from trailerlink_worklist.worklist import Clock, Worklist

from .conftest import Ctl

pytestmark = pytest.mark.kafka
SITE = "SITE-CTL01"
STATION = "MGCTL1"
# Synthetic women: TEST names, NHS numbers from the 999 test range.
WOMEN = [
    ("TEST^CTLALPHA", "9990000018", "19700101"),
    ("TEST^CTLBRAVO", "9990000026", "19650315"),
    ("TEST^CTLCHARLIE", "9990000034", "19580720"),
]


def _step(i: int, day: str) -> ScheduledStep:
    name, nhs, born = WOMEN[i]
    return ScheduledStep(
        accession_number=f"CTL{i:05d}",
        scheduled_procedure_step_id=f"SPS{i:05d}",
        scheduled_date=day,
        scheduled_time=f"{9 + i:02d}1500",
        patient_name=name,
        patient_id=nhs,
        issuer_of_patient_id="NHS",
        patient_birth_date=born,
        patient_sex="F",
        study_instance_uid=f"1.2.826.0.1.3680043.8.498.5{i:05d}",
        modality="MG",
        scheduled_station_ae_title=STATION,
        scheduled_location=SITE,
        scheduled_step_description="Screening 4 views",
    )


@dataclass
class RunningWorklist:
    base: str
    log_path: Path
    today: str
    tomorrow: str


@pytest.fixture(scope="module")
def worklist(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, token_file: Path
) -> Iterator[RunningWorklist]:
    tmp = tmp_path_factory.mktemp("worklist")
    clock = Clock("Europe/London")
    today, tomorrow = clock.today(), clock.today() + timedelta(days=1)
    # The cache the service will serve: two women today (one arrived), one tomorrow.
    key_file = tmp / "worklist.key"
    SpoolKey.generate().write_file(key_file)
    cache = Cache(
        tmp / "data" / "worklist" / "worklist.sqlite", FieldCipher(SpoolKey.from_file(key_file))
    )
    wl = Worklist(cache, SiteFilter(SITE, (STATION,), "MG"), "trailer-ctl", clock)
    wl.upsert(_step(0, today.strftime("%Y%m%d")), Source.DICOM_MWL)
    wl.upsert(_step(1, today.strftime("%Y%m%d")), Source.DICOM_MWL)
    wl.upsert(_step(2, tomorrow.strftime("%Y%m%d")), Source.DICOM_MWL)
    wl.set_status(
        _step(1, "").replace(scheduled_date=today.strftime("%Y%m%d")).key, StepStatus.ARRIVED
    )
    cache.close()
    http = free_port()
    log_path = tmp / "worklist.log"
    proc = ServiceProcess(
        [console_script("trailerlink-worklist")],
        env={
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_DATA_DIR": str(tmp / "data"),
            "TRAILERLINK_WORKLIST_KEY_FILE": str(key_file),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(http),
            "TRAILERLINK_DICOM_HOST": "127.0.0.1",
            "TRAILERLINK_DICOM_PORT": str(free_port()),
            "TRAILERLINK_SITE_CODE": SITE,
            "TRAILERLINK_STATION_AE_TITLES": STATION,
            "TRAILERLINK_UPSTREAM": "none",
            "TRAILERLINK_TRAILER_ID": "trailer-ctl",
            "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
        },
        log_path=log_path,
    )
    proc.start()
    base = f"http://127.0.0.1:{http}"
    try:
        proc.wait_ready(f"{base}/readyz", timeout=60)
        yield RunningWorklist(base, log_path, today.isoformat(), tomorrow.isoformat())
    finally:
        proc.kill9()


@pytest.fixture
def wctl(worklist: RunningWorklist, token_file: Path) -> Ctl:
    return Ctl(
        {"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_WORKLIST_URL": worklist.base}
    )


def test_names_are_hidden_by_default(wctl: Ctl, worklist: RunningWorklist) -> None:
    result = wctl("worklist", "show", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["date"] == worklist.today and doc["names_shown"] is False
    assert doc["site_code"] == SITE and doc["trailer_id"] == "trailer-ctl"
    steps = doc["steps"]
    assert [s["accession_number"] for s in steps] == ["CTL00000", "CTL00001"]
    assert [s["sps_status"] for s in steps] == ["SCHEDULED", "ARRIVED"]
    assert [s["patient_id"] for s in steps] == ["*******018", "*******026"]
    assert all(s["patient_name"] is None and s["birth_date"] is None for s in steps)
    human = wctl("worklist", "show")
    assert human.code == 0, human.err
    assert "CTL00001" in human.out and "ARRIVED" in human.out and "(hidden)" in human.out
    for name, nhs, born in WOMEN:
        for secret in (name, nhs, born):
            assert secret not in result.out and secret not in human.out


def test_show_names_is_audited_without_the_names(wctl: Ctl, worklist: RunningWorklist) -> None:
    result = wctl("worklist", "show", "--date", worklist.tomorrow, "--show-names", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["names_shown"] is True and doc["date"] == worklist.tomorrow
    [step] = doc["steps"]
    assert (step["patient_name"], step["patient_id"], step["birth_date"]) == WOMEN[2]
    human = wctl("worklist", "show", "--show-names")
    assert human.code == 0 and "TEST^CTLALPHA" in human.out

    import httpx

    audit = httpx.get(
        f"{worklist.base}/v1/admin/worklist/audit",
        headers={"Authorization": f"Bearer {_token(wctl)}"},
        timeout=10,
    ).json()
    day = worklist.tomorrow.replace("-", "")
    records = [r for r in audit["records"] if r["action"] == "worklist_names_shown"]
    assert any(r["detail"] == f"date={day} steps=1" for r in records), records
    assert all(r["actor"] for r in records)
    logged = [
        json.loads(line)
        for line in worklist.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    shown = [e for e in logged if "patient names" in e.get("message", e.get("msg", ""))]
    assert any(e.get("date") == day and e.get("actor") for e in shown), shown[-3:]
    text = worklist.log_path.read_text()
    for name, nhs, born in WOMEN:
        assert name not in text and nhs not in text and born not in text


def _token(ctl: Ctl) -> str:
    return Path(ctl.env["TRAILERLINKCTL_TOKEN_FILE"]).read_text().strip()


@pytest.mark.parametrize("bad", ["28/11/2026", "2026-13-01", "2026-02-30", "yesterdayish"])
def test_unknown_date_format_is_a_clear_usage_error(wctl: Ctl, bad: str) -> None:
    result = wctl("worklist", "show", "--date", bad)
    assert result.code == 2
    assert "malformed date" in result.err and "YYYY-MM-DD" in result.err
    assert result.out == ""


def test_missing_and_wrong_credentials_are_refused(wctl: Ctl, tmp_path: Path) -> None:
    result = wctl("worklist", "show", token=False)
    assert result.code == 4 and "no admin token" in result.err
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    result = wctl("worklist", "show", "--show-names", TRAILERLINKCTL_TOKEN_FILE=str(wrong))
    assert result.code == 4 and "not accepted" in result.err
    assert "TEST^" not in result.out
