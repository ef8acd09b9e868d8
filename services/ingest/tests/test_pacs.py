"""PACS outages, busy statuses, refusals and transfer-syntax fallback, against Orthanc."""

from __future__ import annotations

import pytest
from trailerlink_ingest.pacs import PacsRefused, PacsTarget, PacsUnavailable, store
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka

BUSY_LUA = 'function ReceivedInstanceFilter(dicom, origin, info)\n  error("busy")\nend\n'


def test_pacs_busy_then_down_is_retried_and_delivered_once_back(
    tmp_path, own_ingest, objects, stored_sha
):
    busy = Orthanc(tmp_path / "pacs", lua=BUSY_LUA).start()  # answers 0xA700
    ingest = own_ingest(busy)
    obj = objects()
    upload_id = ingest.upload(obj)
    wait_until(
        lambda: ingest.metric("trailerlink_ingest_pacs_store_failures_total") >= 2,
        60,
        "C-STOREs refused as busy and retried",
    )
    busy.stop()  # now the PACS is down altogether
    failures = ingest.metric("trailerlink_ingest_pacs_store_failures_total")
    wait_until(
        lambda: ingest.metric("trailerlink_ingest_pacs_store_failures_total") > failures + 1,
        60,
        "retries against a PACS that is down",
    )
    assert not any(r["upload_id"] == upload_id for r in ingest.receipts())
    back = Orthanc(tmp_path / "pacs", dicom_port=busy.dicom_port, http_port=busy.http_port).start()
    try:
        receipt = ingest.wait_receipt(upload_id, timeout=60)
        assert receipt["outcome"] == "delivered"
        assert stored_sha(back, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
        assert back.new_instance_changes() == 1
    finally:
        back.stop()


def test_pacs_refusing_the_object_gives_a_failed_receipt(
    tmp_path, own_ingest, objects, kafka_bootstrap
):
    # Orthanc answers every storage failure with 0xA700 (retryable), so its permanent
    # refusal is at negotiation: a transfer syntax it does not accept, fallback off.
    strict = Orthanc(
        tmp_path / "pacs", extra_config={"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"]}
    ).start()
    try:
        ingest = own_ingest(strict, extra_env={"TRAILERLINK_PACS_ALLOW_LOSSLESS_FALLBACK": "false"})
        obj = objects()
        receipt = ingest.wait_receipt(ingest.upload(obj))
        assert receipt["outcome"] == "failed"
        assert receipt["reason_code"] == "PACS_REFUSED"
        assert "presentation context" in receipt["reason"]
        assert strict.instances() == []
    finally:
        strict.stop()


def test_lossless_fallback_is_used_and_recorded(tmp_path, own_ingest, objects):
    strict = Orthanc(
        tmp_path / "pacs", extra_config={"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"]}
    ).start()
    try:
        ingest = own_ingest(strict)
        obj = objects()
        receipt = ingest.wait_receipt(ingest.upload(obj))
        assert receipt["outcome"] == "delivered"
        assert obj.meta.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        assert receipt["stored_transfer_syntax_uid"] == "1.2.840.10008.1.2"
        assert ingest.metric("trailerlink_ingest_lossless_fallbacks_total") == 1
        import io

        from pydicom import dcmread

        stored = dcmread(io.BytesIO(strict.instance_file(strict.instances()[0])))
        original = dcmread(obj.original)
        assert stored.PixelData == original.PixelData
    finally:
        strict.stop()


def test_store_statuses_are_classified(tmp_path, objects):
    """Failure statuses a PACS may send (Orthanc sends only 0xA700): busy retries,
    others are refusals with their status."""
    from trailerlink_ingest import pacs as pacs_module

    assert pacs_module._is_transient(0xA700) and pacs_module._is_transient(0xA7FF)
    assert pacs_module._is_transient(0x0213)
    for status in (0xA900, 0xC000, 0x0122, 0x0117, 0x0124):
        assert not pacs_module._is_transient(status)
        assert status not in pacs_module.SUCCESS_STATUSES
    obj = objects()
    with pytest.raises(PacsUnavailable):
        store(
            obj.original,
            obj.meta.sop_class_uid,
            obj.meta.transfer_syntax_uid,
            PacsTarget("127.0.0.1", 9, "PACS", timeout_seconds=2),
        )
    assert issubclass(PacsRefused, Exception)
