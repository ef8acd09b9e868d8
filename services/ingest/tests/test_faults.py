"""kill -9 of the ingest during an upload and during processing: every acknowledged
offset survives, processing resumes, and PACS gets exactly one store."""

from __future__ import annotations

import pytest
from trailerlink_sealed.testdata import MGSpec
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_kill9_during_upload_keeps_every_acknowledged_offset(
    tmp_path, own_ingest, objects, stored_sha
):
    with Orthanc(tmp_path / "pacs") as pacs:
        ingest = own_ingest(pacs)
        obj = objects(spec=MGSpec(rows=512, cols=384, seed=7))
        uploader = ingest.client().uploader(
            file_path=str(obj.sealed), chunk_size=8192, metadata=obj.metadata, upload_checksum=True
        )
        uploader.upload(stop_at=obj.meta.sealed_size // 2)
        acknowledged = uploader.offset
        ingest.proc.kill9()
        ingest.start()
        with ingest.session() as s:
            offset = int(s.head(uploader.url, timeout=10).headers["Upload-Offset"])
        assert offset == acknowledged
        resumed = ingest.client().uploader(
            file_path=str(obj.sealed),
            url=uploader.url,
            chunk_size=8192,
            metadata=obj.metadata,
            upload_checksum=True,
        )
        resumed.upload()
        receipt = ingest.wait_receipt(uploader.url.rsplit("/", 1)[-1])
        assert receipt["outcome"] == "delivered"
        assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
        assert pacs.new_instance_changes() == 1


def test_kill9_during_processing_resumes_and_stores_once(tmp_path, own_ingest, objects, stored_sha):
    pacs = Orthanc(tmp_path / "pacs")
    ingest = own_ingest(pacs)  # PACS not started yet: processing waits in retries
    obj = objects()
    upload_id = ingest.upload(obj)
    wait_until(
        lambda: ingest.metric("trailerlink_ingest_pacs_store_failures_total") >= 1,
        60,
        "processing under way (verified, PACS retries)",
    )
    ingest.proc.kill9()
    pacs.start()
    try:
        ingest.start()
        receipt = ingest.wait_receipt(upload_id, timeout=90)
        assert receipt["outcome"] == "delivered"
        assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
        assert pacs.new_instance_changes() == 1
        assert [r["upload_id"] for r in ingest.receipts()].count(upload_id) == 1
    finally:
        pacs.stop()


def test_kill9_after_the_last_byte_before_the_announcement_is_swept(tmp_path, own_ingest, objects):
    """An upload whose completion never reached Kafka (Kafka unreachable, then a crash)
    is announced by the sweeper after restart."""
    with Orthanc(tmp_path / "pacs") as pacs:
        ingest = own_ingest(
            pacs, extra_env={"TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
        )  # no Kafka at all
        obj = objects()
        upload_id = ingest.upload(obj)  # the bytes are durable and acknowledged
        ingest.proc.kill9()
        ingest.proc.env["TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS"] = ingest.kafka_bootstrap
        ingest.start()
        assert ingest.wait_receipt(upload_id, timeout=90)["outcome"] == "delivered"
