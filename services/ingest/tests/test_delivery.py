"""An object uploaded by tuspy reaches Orthanc byte-identical; receipts and events say so."""

from __future__ import annotations

import pytest
from trailerlink_events import topics
from trailerlink_testing.kafka_reader import read_events

pytestmark = pytest.mark.kafka


async def test_upload_reaches_pacs_byte_identical(
    ingest, pacs, objects, stored_sha, kafka_bootstrap
):
    obj = objects()
    upload_id = ingest.upload(obj, chunk_size=4096)
    receipt = ingest.wait_receipt(upload_id)
    assert receipt["outcome"] == "delivered", receipt
    assert receipt["sop_instance_uid"] == obj.meta.sop_instance_uid
    assert receipt["stored_transfer_syntax_uid"] == obj.meta.transfer_syntax_uid
    assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
    key = f"trailer-01/{obj.meta.study_instance_uid}"
    delivered = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_OBJECT_DELIVERED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    assert delivered[0].event.dataset_sha256 == obj.meta.dataset_sha256
    assert delivered[0].event.upload_id == upload_id  # support correlates by it
    completed = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_UPLOAD_COMPLETED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    assert completed[0].event.upload_id == upload_id
