"""The whole chain with real peers: modality (dcmtk + pynetdicom) -> gateway -> codec ->
uplink -> (fault proxy) -> ingest -> Orthanc, with the worklist fed by dcmtk wlmscpfs and
the monitor agent relaying to the fleet monitor. Every service is a subprocess on two
separate Kafka brokers. Tests run in file order on one system (see conftest)."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from trailerlink_testing.stack import (
    GATEWAY_AE,
    booking_secrets,
    parse_storescu,
    scan_logs_for,
)
from trailerlink_testing.waiting import wait_until

from .conftest import System

pytestmark = pytest.mark.kafka


def _journey(system: System, study_uid: str) -> list[dict[str, object]]:
    url = system.central.fleet.url(f"/v1/audit/studies/{study_uid}")
    with urllib.request.urlopen(url, timeout=10) as rsp:  # noqa: S310 - local test URL
        return json.loads(rsp.read())["journey"]


def test_a_screened_woman_reaches_pacs_byte_identical_once_and_is_committed(
        system: System) -> None:
    [item] = system.next_women(1)
    study = system.screen(item)
    assert study.mpps_statuses == [0, 0]
    assert len(study.sent) == 4 and not study.failed
    system.wait_confirmed([study])
    assert not study.commit_failed
    system.assert_in_pacs_byte_identical([study])
    assert len(system.central.pacs.instances()) == 4  # each image exactly once
    for sop in study.sent:
        stored = system.central.pacs.get(f"/instances/{system.central.pacs.find_instance(sop)}"
                                         "/simplified-tags")
        assert stored["StudyInstanceUID"] == study.study_instance_uid
        assert stored["AccessionNumber"] == study.accession_number  # the right woman
    wait_until(lambda: system.trailer.backlog_objects() == 0, 60, "uplink backlog empty")


def test_the_fleet_monitor_sees_every_image_taken_and_in_pacs(system: System) -> None:
    study = system.screened[0]

    def complete() -> bool:
        steps = _journey(system, study.study_instance_uid)
        in_pacs = {s["sop_instance_uid"] for s in steps if s["stage"] == "in_pacs"}
        taken = {s["sop_instance_uid"] for s in steps if s["stage"] == "taken"}
        return set(study.sent) <= in_pacs and set(study.sent) <= taken

    wait_until(complete, 90, "the fleet monitor's audit shows every image taken and in PACS",
               interval=0.5)
    assert system.central.fleet.metric("trailerlink_monitor_completeness_missing_images") == 0


def test_kill9_of_every_service_and_link_cuts_mid_chunk_lose_nothing(system: System) -> None:
    first, second = system.next_women(2)
    before = system.screen(first, seed=11)
    # A power cut of each trailer service and of the ingest while that study is in flight.
    for name in ("codec", "uplink", "gateway", "worklist", "agent"):
        system.trailer.services[name].kill9()
    system.central.ingest.kill9()
    system.link.cut_after(20_000)  # the next upload is cut mid-chunk
    for name in ("codec", "uplink", "gateway", "worklist", "agent"):
        system.trailer.services[name].restart()
    system.central.ingest.restart()
    after = system.screen(second, seed=12)  # the gateway was restarted: it must still commit
    system.link.cut()
    system.wait_confirmed([before, after], timeout=240)
    system.assert_in_pacs_byte_identical([before, after])
    assert len(system.central.pacs.instances()) == 4 * len(system.screened)
    wait_until(lambda: system.trailer.backlog_objects() == 0, 60, "uplink backlog empty")


def test_an_unknown_modality_ae_is_refused_and_nothing_else_disturbed(
        system: System, tmp_path) -> None:
    [item] = system.next_women(1)
    _, paths = system.modality.write_views(item, tmp_path, seed=21)
    before = len(system.central.pacs.instances())
    done = subprocess.run(["storescu", "-v", "-nh", "-aet", "STRANGER", "-aec", GATEWAY_AE,
                           "127.0.0.1", str(system.trailer.gateway_port), *map(str, paths)],
                          capture_output=True, text=True, timeout=60, check=False)
    ok, _ = parse_storescu(done.stdout + done.stderr)
    assert ok == [] and done.returncode != 0
    assert system.trailer.gateway.metric("trailerlink_gateway_rejects_total") >= 1
    # ... and the next woman by the real modality goes through as before.
    study = system.screen(item, seed=22)
    system.wait_confirmed([study])
    system.assert_in_pacs_byte_identical([study])
    assert len(system.central.pacs.instances()) == before + 4


def test_a_revoked_trailer_is_refused_at_the_ingest_until_reinstated(system: System) -> None:
    central = system.central
    central.write_access(allow=[central.trailer_id], revoked=[central.trailer_id])
    [item] = system.next_women(1)
    study = system.screen(item, seed=31)
    wait_until(lambda: central.ingest.metric("trailerlink_ingest_auth_refusals_total") >= 1,
               60, "the ingest refusing the revoked trailer", interval=0.2)
    assert all(central.pacs.find_instance(sop) is None for sop in study.sent)
    assert not study.committed
    central.write_access(allow=[central.trailer_id])
    system.wait_confirmed([study], timeout=240)
    system.assert_in_pacs_byte_identical([study])


def test_broker_restarts_and_a_pacs_outage_delay_but_lose_nothing(system: System) -> None:
    central, trailer = system.central, system.trailer
    refused_before = central.ingest.metric("trailerlink_ingest_pacs_store_failures_total")
    central.pacs.stop()
    trailer.broker.stop()  # the gateway still stores: its events wait in its outbox
    [item] = system.next_women(1)
    study = system.screen(item, seed=41)
    assert len(study.sent) == 4
    trailer.broker.start()
    central.broker.stop()
    central.broker.start()
    wait_until(lambda: central.ingest.metric("trailerlink_ingest_pacs_store_failures_total")
               > refused_before, 180, "the ingest finding the PACS down", interval=0.5)
    assert not study.committed  # nothing is confirmed while the PACS is away
    central.pacs.start()
    system.wait_confirmed([study], timeout=300)
    system.assert_in_pacs_byte_identical([study])
    assert len(central.pacs.instances()) == 4 * len(system.screened)


def test_zz_no_patient_data_in_any_service_log(system: System) -> None:
    logs = system.trailer.log_files() + system.central.log_files()
    assert len(logs) >= 7
    assert scan_logs_for(logs, booking_secrets(system.bookings)) == {}
