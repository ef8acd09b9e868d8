"""Optional PACS storage commitment against Orthanc's Storage Commitment SCP: an object
Orthanc stored is not delivered until Orthanc's N-EVENT-REPORT says it is committed.
While the report cannot reach the ingest, there is no receipt and no second store; once
it can, the ingest asks again and the receipt says ``storage_committed``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from trailerlink_events import topics
from trailerlink_ingest.ledger import Ledger
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka
INGEST_AE = "TRAILERLINK"


def _set_modality(pacs: Orthanc, port: int) -> None:
    """Point Orthanc's entry for the ingest at ``port`` (Orthanc's REST API, live)."""
    body = json.dumps({"AET": INGEST_AE, "Host": "127.0.0.1", "Port": port}).encode()
    rsp = requests.put(f"{pacs.url}/modalities/ingest", data=body, timeout=10)
    assert rsp.status_code == 200, rsp.text


async def test_delivered_only_on_the_pacs_commitment_report(
    tmp_path: Path, own_ingest, objects, stored_sha, kafka_bootstrap
) -> None:
    nowhere, commitment_port = free_port(), free_port()
    with Orthanc(
        tmp_path / "orthanc",
        ae_title="PACS",
        extra_config={
            "DicomModalities": {"ingest": {"AET": INGEST_AE, "Host": "127.0.0.1", "Port": nowhere}}
        },
    ) as pacs:
        ingest = own_ingest(
            pacs,
            extra_env={
                "TRAILERLINK_PACS_STORAGE_COMMITMENT": "true",
                "TRAILERLINK_CALLING_AE_TITLE": INGEST_AE,
                "TRAILERLINK_COMMITMENT_HOST": "127.0.0.1",
                "TRAILERLINK_COMMITMENT_PORT": str(commitment_port),
                "TRAILERLINK_COMMITMENT_TIMEOUT_SECONDS": "1",
            },
        )
        obj = objects()
        upload_id = ingest.upload(obj)
        ledger = Ledger(sqlite_path=Path(ingest.env["TRAILERLINK_LEDGER_SQLITE_PATH"]))

        def pending() -> bool:
            return any(
                c.upload_id == upload_id for c in ledger.commitments_overdue(time.time() + 3600)
            )

        wait_until(
            lambda: stored_sha(pacs, obj.meta.sop_instance_uid) is not None and pending(),
            60,
            "stored in Orthanc, commitment requested",
        )
        # Orthanc's report cannot reach the ingest: stored, but not delivered.
        assert all(r["upload_id"] != upload_id for r in ingest.receipts())
        stores = ingest.metric("trailerlink_ingest_pacs_store_seconds_count")

        _set_modality(pacs, commitment_port)
        receipt = ingest.wait_receipt(upload_id, timeout=60)
        assert receipt["outcome"] == "delivered" and receipt["storage_committed"], receipt
        assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
        assert len(pacs.instances()) == 1  # asked again, never stored again
        assert ingest.metric("trailerlink_ingest_pacs_store_seconds_count") == stores
        key = f"trailer-01/{obj.meta.study_instance_uid}"
        [delivered] = await read_events(
            kafka_bootstrap,
            topics.CENTRAL_OBJECT_DELIVERED,
            lambda seen: len(seen) >= 1,
            match=lambda d: d.key == key,
        )
        assert delivered.event.storage_committed and delivered.event.upload_id == upload_id
        ledger.close()
