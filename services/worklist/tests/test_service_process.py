"""The service as a real subprocess: served from its cache with the broker down, and
after a kill -9 and restart; its own log carries no patient data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get
from trailerlink_testing.waiting import wait_until
from trailerlink_worklist.model import to_dataset

from .conftest import BIRTH_DATES, NAMES, NHS_NUMBERS, SITE, STATION, booking, key_file

pytestmark = pytest.mark.kafka


def _accessions(port: int) -> set[str]:
    result = findscu("127.0.0.1", port, "TRAILERLINK_MWL", ["AccessionNumber", "PatientName"])
    assert result.final_status == "Success", result.log[-500:]
    return {str(r.AccessionNumber) for r in result.responses}


def test_service_serves_from_its_cache_through_outages_and_kill9(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    broker = Wlmscpfs(tmp_path / "broker", ae_title="NBSS_MWL")
    for i in range(5):
        ds = to_dataset(booking(i))
        ds.SpecificCharacterSet = "ISO_IR 100"
        broker.write(f"b{i}", ds)
    broker.start()
    http, dicom = free_port(), free_port()
    env = {
        "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
        "TRAILERLINK_WORKLIST_KEY_FILE": str(key_file(tmp_path)),
        "TRAILERLINK_HTTP_HOST": "127.0.0.1",
        "TRAILERLINK_HTTP_PORT": str(http),
        "TRAILERLINK_DICOM_HOST": "127.0.0.1",
        "TRAILERLINK_DICOM_PORT": str(dicom),
        "TRAILERLINK_SITE_CODE": SITE,
        "TRAILERLINK_STATION_AE_TITLES": STATION,
        "TRAILERLINK_UPSTREAM": "dicom_mwl",
        "TRAILERLINK_UPSTREAM_MWL_PORT": str(broker.port),
        "TRAILERLINK_UPSTREAM_POLL_SECONDS": "1",
        "TRAILERLINK_UPSTREAM_TIMEOUT_SECONDS": "3",
        "TRAILERLINK_TRAILER_ID": "trailer-proc",
        "TRAILERLINK_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "worklist.log"
    service = ServiceProcess([console_script("trailerlink-worklist")], env=env, log_path=log_path)
    try:
        with service:
            service.wait_ready(f"http://127.0.0.1:{http}/readyz", timeout=60)
            expected = {f"ACC{i:05d}" for i in range(5)}
            wait_until(lambda: _accessions(dicom) == expected, 30, "first poll served")

            broker.stop()  # the link is down
            broker.remove("b4")  # ... and meanwhile NBSS cancels one
            wait_until(
                lambda: (
                    "trailerlink_worklist_upstream_up"
                    in (m := http_get(f"http://127.0.0.1:{http}/metrics"))
                    and 'trailerlink_worklist_upstream_up{adapter="dicom_mwl"} 0.0' in m
                ),
                30,
                "link reported down",
            )
            assert _accessions(dicom) == expected  # still served from the cache

            service.kill9()  # a power cut, with the link still down
            service.start()
            service.wait_ready(f"http://127.0.0.1:{http}/readyz", timeout=60)
            assert _accessions(dicom) == expected  # the cache survived

            broker.start()  # back online: the cancellation arrives
            wait_until(
                lambda: _accessions(dicom) == expected - {"ACC00004"},
                30,
                "cancellation applied after the outage",
            )
            metrics = http_get(f"http://127.0.0.1:{http}/metrics")
            assert "trailerlink_worklist_cache_age_seconds" in metrics
            assert 'trailerlink_worklist_cfind_requests_total{outcome="success"}' in metrics
            assert service.terminate() == 0
    finally:
        broker.stop()
        service.kill9()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, "the service logged nothing"
    for secret in (*NAMES, *NHS_NUMBERS, *BIRTH_DATES, "TEST^"):
        assert secret not in text, "patient data in the service log"
