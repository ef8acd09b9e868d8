"""The whole chain with real peers: modality (dcmtk + pynetdicom) -> gateway -> codec ->
uplink -> (fault proxy) -> ingest -> Orthanc, with the worklist fed by dcmtk wlmscpfs and
the monitor agent relaying to the fleet monitor. Every service is a subprocess on two
separate Kafka brokers. Tests run in file order on one system (see conftest)."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import urllib.request
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from trailerlink_events.topics import CENTRAL_OBJECT_FAILED
from trailerlink_sealed import RecipientKey, seal
from trailerlink_spool.part10 import dataset_offset
from trailerlink_testing.dicom import write_synthetic
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.stack import (
    GATEWAY_AE,
    booking_secrets,
    parse_storescu,
    restart_all,
    scan_logs_for,
)
from trailerlink_testing.waiting import wait_until
from tusclient.client import TusClient

from .conftest import System

pytestmark = pytest.mark.kafka

BROKER_RESTART_SECONDS = 300.0


def _journey(system: System, study_uid: str) -> list[dict[str, object]]:
    url = system.central.fleet.url(f"/v1/audit/studies/{study_uid}")
    with urllib.request.urlopen(url, timeout=10) as rsp:  # noqa: S310 - local test URL
        return json.loads(rsp.read())["journey"]


def test_a_screened_woman_reaches_pacs_byte_identical_once_and_is_committed(system: System) -> None:
    [item] = system.next_women(1)
    study = system.screen(item)
    assert study.mpps_statuses == [0, 0]
    assert len(study.sent) == 4 and not study.failed
    system.wait_confirmed([study])
    assert not study.commit_failed
    system.assert_in_pacs_byte_identical([study])
    assert len(system.central.pacs.instances()) == 4  # each image exactly once
    for sop in study.sent:
        stored = system.central.pacs.get(
            f"/instances/{system.central.pacs.find_instance(sop)}/simplified-tags"
        )
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

    wait_until(
        complete, 90, "the fleet monitor's audit shows every image taken and in PACS", interval=0.5
    )
    assert system.central.fleet.metric("trailerlink_monitor_completeness_missing_images") == 0


def test_kill9_of_every_service_and_link_cuts_mid_chunk_lose_nothing(system: System) -> None:
    first, second = system.next_women(2)
    before = system.screen(first, seed=11)
    # A power cut of each trailer service and of the ingest while that study is in flight.
    for name in ("codec", "uplink", "gateway", "worklist", "agent"):
        system.trailer.services[name].kill9()
    system.central.ingest.kill9()
    system.link.cut_after(20_000)  # the next upload is cut mid-chunk
    # All back at once, as after a power cut (their start-ups overlap).
    restart_all(
        [
            *(
                system.trailer.services[name]
                for name in ("codec", "uplink", "gateway", "worklist", "agent")
            ),
            system.central.ingest,
        ]
    )
    after = system.screen(second, seed=12)  # the gateway was restarted: it must still commit
    system.link.cut()
    system.wait_confirmed([before, after], timeout=240)
    system.assert_in_pacs_byte_identical([before, after])
    assert len(system.central.pacs.instances()) == len(system.modality.acknowledged)
    wait_until(lambda: system.trailer.backlog_objects() == 0, 60, "uplink backlog empty")


def test_an_unknown_modality_ae_is_refused_and_nothing_else_disturbed(
    system: System, tmp_path
) -> None:
    [item] = system.next_women(1)
    _, paths = system.modality.write_views(item, tmp_path, seed=21)
    before = len(system.central.pacs.instances())
    done = subprocess.run(
        [
            "storescu",
            "-v",
            "-nh",
            "-aet",
            "STRANGER",
            "-aec",
            GATEWAY_AE,
            "127.0.0.1",
            str(system.trailer.gateway_port),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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
    wait_until(
        lambda: central.ingest.metric("trailerlink_ingest_auth_refusals_total") >= 1,
        60,
        "the ingest refusing the revoked trailer",
        interval=0.2,
    )
    assert all(central.pacs.find_instance(sop) is None for sop in study.sent)
    assert not study.committed
    central.write_access(allow=[central.trailer_id])
    system.wait_confirmed([study], timeout=240)
    system.assert_in_pacs_byte_identical([study])


def test_a_corrupt_dataset_is_refused_with_a_reason_and_nothing_is_spooled_or_sealed(
    system: System, tmp_path: Path
) -> None:
    trailer, modality = system.trailer, system.modality
    [item] = system.next_women(1)
    _, paths = modality.write_views(item, tmp_path, seed=51)
    raw = paths[0].read_bytes()
    truncated = tmp_path / "truncated.dcm"  # pixel data ends a third short
    truncated.write_bytes(raw[: len(raw) - len(raw) // 3])
    garbage = tmp_path / "garbage.dcm"  # a valid file meta, then noise
    garbage.write_bytes(raw[: dataset_offset(raw)] + random.Random(51).randbytes(4096))
    received = trailer.gateway.metric("trailerlink_gateway_objects_received_total")
    sealed = trailer.services["codec"].metric("trailerlink_codec_objects_total")
    dead_before = system.dead_letters()
    in_pacs = len(system.central.pacs.instances())

    statuses = modality.send_raw([truncated, garbage])
    for status in statuses:
        assert status is not None and 0xC000 <= int(status.Status) <= 0xCFFF, status
        comment = str(status.get("ErrorComment", ""))
        assert comment, "a refusal says why"
        assert not any(
            str(v) in comment for v in (item.PatientName, item.PatientID, item.PatientBirthDate)
        )
    assert trailer.gateway.metric("trailerlink_gateway_objects_received_total") == received
    corrupt_sop = _sop_of(raw)  # both files carry view 1's UIDs in their file meta
    assert list((trailer.dir / "data").rglob(f"{corrupt_sop}.*")) == []  # nothing spooled
    # ... and the woman's real views, stored next, go all the way as before.
    study = system.screen(item, seed=52)
    assert len(study.sent) == 4 and not study.failed
    system.wait_confirmed([study])
    system.assert_in_pacs_byte_identical([study])
    assert len(system.central.pacs.instances()) == in_pacs + 4
    # Sealed: the 4 real views and nothing else.
    assert trailer.services["codec"].metric("trailerlink_codec_objects_total") == sealed + 4
    assert system.central.pacs.find_instance(corrupt_sop) is None
    assert system.dead_letters() == dead_before


def _sop_of(part10: bytes) -> str:
    return str(dcmread(DicomBytesIO(part10), stop_before_pixels=True).SOPInstanceUID)


def test_a_tampered_sealed_object_at_the_ingest_fails_verification_and_disturbs_nothing(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    central = system.central
    pki = central.pki
    tid = central.trailer_id
    # An object sealed for the data centre's key, as the codec does, then one bit flipped
    # in its last chunk; uploaded with the trailer's own certificate.
    original = write_synthetic(tmp_path / "intruder.dcm", rows=256, columns=208, seed=61)
    [public] = sorted(central.sealing_public.glob("*.pem"))
    result = seal(original.path, tmp_path / "intruder.sealed", RecipientKey.load(public))
    tampered = bytearray(result.path.read_bytes())
    tampered[-100] ^= 0x01
    result.path.write_bytes(bytes(tampered))
    [item] = system.next_women(1)
    dead_before = system.dead_letters()
    failures = central.ingest.metric("trailerlink_ingest_verify_failures_total")

    async def object_failed() -> list:
        return await read_events(
            central.broker.bootstrap,
            CENTRAL_OBJECT_FAILED,
            lambda seen: bool(seen),
            timeout=120,
            match=lambda d: d.event.object.sop_instance_uid == original.sop_instance_uid,
        )

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki / "ca.crt"))  # tuspy uses requests
    client = TusClient(
        f"{central.ingest_url}/files/",
        client_cert=(str(pki / f"{tid}.crt"), str(pki / f"{tid}.key")),
    )
    uploader = client.uploader(
        file_path=str(result.path),
        chunk_size=1 << 20,
        metadata={
            "sop_instance_uid": original.sop_instance_uid,
            "study_instance_uid": original.study_instance_uid,
            "series_instance_uid": original.series_instance_uid,
            "sop_class_uid": original.sop_class_uid,
            "dataset_sha256": result.dataset_sha256 or "",
            "file_sha256": result.original_sha256,
            "sealed_size": str(result.sealed_size),
            "key_id": result.key_id,
        },
    )
    uploader.upload()
    upload_id = uploader.url.rsplit("/", 1)[-1]
    # A woman screened meanwhile is not held up by it.
    study = system.screen(item, seed=62)

    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    tls.load_cert_chain(str(pki / f"{tid}.crt"), str(pki / f"{tid}.key"))

    def receipt() -> dict | None:
        with httpx.Client(verify=tls, timeout=10) as http:
            rsp = http.get(f"{central.ingest_url}/v1/receipts", params={"after": 0, "limit": 1000})
            rsp.raise_for_status()
            return next((r for r in rsp.json()["receipts"] if r["upload_id"] == upload_id), None)

    found = wait_until(receipt, 120, "the tampered upload's receipt", interval=0.5)
    assert found["outcome"] == "failed" and found["reason_code"] == "VERIFY_FAILED"
    [failed] = asyncio.run(object_failed())
    assert failed.event.reason_code != 0
    assert central.ingest.metric("trailerlink_ingest_verify_failures_total") == failures + 1
    system.wait_confirmed([study])
    system.assert_in_pacs_byte_identical([study])
    assert central.pacs.find_instance(original.sop_instance_uid) is None
    assert system.dead_letters() == dead_before


def test_images_acknowledged_before_an_aborted_association_still_arrive(system: System) -> None:
    [item] = system.next_women(1)
    aborted = system.modality.store_then_abort(item, stores=2, seed=71)
    assert len(aborted.sent) == 2 and len(aborted.failed) == 2
    system.screened.append(aborted)
    system.modality.request_commitment(aborted)
    # The radiographer repeats the study on a fresh association.
    again = system.screen(item, seed=72)
    assert len(again.sent) == 4 and not again.failed
    system.wait_confirmed([aborted, again])
    system.assert_each_exactly_once_byte_identical({**aborted.sent, **again.sent})
    assert not any(system.central.pacs.find_instance(sop) for sop in aborted.failed)


def test_broker_restarts_and_a_pacs_outage_delay_but_lose_nothing(system: System) -> None:
    central, trailer = system.central, system.trailer
    refused_before = central.ingest.metric("trailerlink_ingest_pacs_store_failures_total")
    central.pacs.stop()
    trailer.broker.stop()  # the gateway still stores: its events wait in its outbox
    [item] = system.next_women(1)
    study = system.screen(item, seed=41)
    assert len(study.sent) == 4
    # Replaying a broker's log takes minutes when other suites share the 2 cores.
    trailer.broker.start(timeout=BROKER_RESTART_SECONDS)
    central.broker.stop()
    central.broker.start(timeout=BROKER_RESTART_SECONDS)
    wait_until(
        lambda: (
            central.ingest.metric("trailerlink_ingest_pacs_store_failures_total") > refused_before
        ),
        180,
        "the ingest finding the PACS down",
        interval=0.5,
    )
    assert not study.committed  # nothing is confirmed while the PACS is away
    central.pacs.start()
    system.wait_confirmed([study], timeout=300)
    system.assert_in_pacs_byte_identical([study])
    assert len(central.pacs.instances()) == len(system.modality.acknowledged)


def test_zy_every_image_the_modality_saw_acknowledged_is_in_pacs_exactly_once(
    system: System,
) -> None:
    acknowledged = dict(system.modality.acknowledged)
    assert len(acknowledged) == sum(len(s.sent) for s in system.screened)
    assert system.modality.acknowledged_twice_differently == []
    system.wait_confirmed(system.screened)
    system.assert_each_exactly_once_byte_identical(acknowledged)
    assert len(system.central.pacs.instances()) == len(acknowledged)
    assert system.dead_letters() == (0, 0)  # none was provoked on purpose


def test_zz_no_patient_data_in_any_service_log(system: System) -> None:
    logs = system.trailer.log_files() + system.central.log_files()
    assert len(logs) >= 7
    assert scan_logs_for(logs, booking_secrets(system.bookings)) == {}
