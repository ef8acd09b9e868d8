"""Storage commitment with a pynetdicom SCU as the modality: an N-EVENT-REPORT says
"committed" only for instances the hospital PACS confirmed (ObjectDelivered)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    StorageCommitmentPushModel,
)
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import ObjectDelivered, ObjectIdentity, new_meta, timestamp
from trailerlink_events.topics import OBJECT_DELIVERED
from trailerlink_gateway.commitment import CommitmentStore
from trailerlink_gateway.statuses import CommitFailure
from trailerlink_testing.dicom import write_study
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka

MG = DigitalMammographyXRayImageStorageForPresentation
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
NEVER_RECEIVED = "1.2.826.0.1.3680043.8.498.999999999"


class Reports:
    """N-EVENT-REPORTs the modality received."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Dataset]] = []
        self._lock = threading.Lock()

    def handler(self, event: evt.Event) -> tuple[int, None]:
        with self._lock:
            self.items.append((event.event_type, event.event_information))
        return 0x0000, None


def _publish_delivered(bootstrap: str, gateway, sop: str) -> None:
    [copy] = gateway.index().copies(sop)

    async def publish() -> None:
        producer = EventProducer(bootstrap, client_id="test-ingest")
        await producer.start()
        try:
            event = ObjectDelivered(
                meta=new_meta("test-ingest", gateway.env["TRAILERLINK_TRAILER_ID"]),
                object=ObjectIdentity(
                    study_instance_uid=copy.study_instance_uid,
                    series_instance_uid=copy.series_instance_uid,
                    sop_instance_uid=sop,
                    sop_class_uid=copy.sop_class_uid,
                    transfer_syntax_uid=copy.transfer_syntax_uid,
                ),
                dataset_sha256=copy.dataset_sha256,
                pacs_ae_title="PACS",
                stored_transfer_syntax_uid=copy.transfer_syntax_uid,
                delivered_at=timestamp(),
            )
            await producer.publish(OBJECT_DELIVERED, copy.study_instance_uid, event)
        finally:
            await producer.stop()

    asyncio.run(publish())


def _outcome_recorded(gateway, sop: str) -> bool:
    store = CommitmentStore(gateway.data_dir / "gateway" / "commitment.sqlite")
    try:
        return bool(store.outcomes([sop]).get(sop))
    finally:
        store.db.close()


def _commit_request(transaction_uid: str, sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for sop in sops:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MG
        ref.ReferencedSOPInstanceUID = sop
        refs.append(ref)
    ds.ReferencedSOPSequence = refs
    return ds


def _modality_ae() -> AE:
    ae = AE(ae_title="MG1")
    ae.add_requested_context(MG, "1.2.840.10008.1.2.1")
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def _store(assoc, paths: list[Path]) -> None:
    for path in paths:
        status = assoc.send_c_store(dcmread(path))
        assert status.Status == 0x0000


def _refs(ds: Dataset, keyword: str) -> dict[str, int]:
    return {
        str(r.ReferencedSOPInstanceUID): int(r.get("FailureReason", 0)) for r in ds.get(keyword, [])
    }


def test_report_waits_for_pacs_and_survives_a_gateway_restart(
    gateway_factory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The modality listens for reports that come on a new association.
    reports = Reports()
    listener_port = free_port()
    listener = AE(ae_title="MG1")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", listener_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
    )
    try:
        gateway = gateway_factory(peers="MG1", commitment_peers=f"MG1=127.0.0.1:{listener_port}")
        study = write_study(tmp_path / "study", 2, rows=64, columns=64)
        sops = [o.sop_instance_uid for o in study]
        assoc = _modality_ae().associate("127.0.0.1", gateway.dicom_port, ae_title="TRAILERLINK")
        assert assoc.is_established
        _store(assoc, [o.path for o in study])
        status, _ = assoc.send_n_action(
            _commit_request("1.2.826.0.1.3680043.8.498.77", [*sops, NEVER_RECEIVED]),
            1,
            StorageCommitmentPushModel,
            COMMITMENT_INSTANCE,
        )
        assert status.Status == 0x0000
        assoc.release()

        _publish_delivered(kafka_bootstrap, gateway, sops[0])
        wait_until(lambda: _outcome_recorded(gateway, sops[0]), 60, "first delivery recorded")
        seen = time.time()
        wait_until(
            lambda: (
                gateway.metric("trailerlink_gateway_commitment_last_pass_timestamp_seconds") > seen
            ),
            30,
            "a commitment pass after the first delivery",
        )
        assert reports.items == [], "reported before every instance was in PACS"

        gateway.kill9()  # the request must survive
        gateway.restart()
        assert reports.items == []
        _publish_delivered(kafka_bootstrap, gateway, sops[1])
        wait_until(lambda: reports.items, 60, "the N-EVENT-REPORT")
    finally:
        server.shutdown()
    [(event_type, info)] = reports.items
    assert event_type == 2  # some failed: the never-received one
    assert str(info.TransactionUID) == "1.2.826.0.1.3680043.8.498.77"
    assert _refs(info, "ReferencedSOPSequence") == dict.fromkeys(sops, 0)
    assert _refs(info, "FailedSOPSequence") == {
        NEVER_RECEIVED: int(CommitFailure.NO_SUCH_OBJECT_INSTANCE)
    }
    assert (
        gateway.metric("trailerlink_gateway_commitments_answered_total", result="some_failed") == 1
    )


def test_report_on_the_same_association_and_failed_for_now_at_the_deadline(
    gateway_factory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    gateway = gateway_factory(peers="MG1", commitment_deadline_seconds=3)
    study = write_study(tmp_path / "study", 2, rows=64, columns=64)
    sops = [o.sop_instance_uid for o in study]
    reports = Reports()
    assoc = _modality_ae().associate(
        "127.0.0.1",
        gateway.dicom_port,
        ae_title="TRAILERLINK",
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
    )
    assert assoc.is_established
    try:
        _store(assoc, [o.path for o in study])
        _publish_delivered(kafka_bootstrap, gateway, sops[0])
        wait_until(lambda: _outcome_recorded(gateway, sops[0]), 60, "delivery recorded")
        status, _ = assoc.send_n_action(
            _commit_request("1.2.826.0.1.3680043.8.498.78", sops),
            1,
            StorageCommitmentPushModel,
            COMMITMENT_INSTANCE,
        )
        assert status.Status == 0x0000
        # sops[1] never reaches PACS: at the deadline it is reported failed (for now).
        wait_until(lambda: reports.items, 30, "the N-EVENT-REPORT on the open association")
    finally:
        assoc.release()
    [(event_type, info)] = reports.items
    assert event_type == 2
    assert _refs(info, "ReferencedSOPSequence") == {sops[0]: 0}
    assert _refs(info, "FailedSOPSequence") == {sops[1]: int(CommitFailure.RESOURCE_LIMITATION)}
