"""Duplicates, replays, UID conflicts and tampering: one object in PACS, a receipt each,
never an overwrite, never an unverified store."""

from __future__ import annotations

import dataclasses

import pytest
from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_sealed.testdata import MGSpec
from trailerlink_testing.kafka_reader import read_events

pytestmark = pytest.mark.kafka


def test_same_object_twice_is_stored_once_and_the_receipt_repeated(
    ingest, pacs, objects, stored_sha
):
    obj = objects()
    first = ingest.wait_receipt(ingest.upload(obj))
    duplicates_before = ingest.metric("trailerlink_ingest_duplicates_total")
    second = ingest.wait_receipt(ingest.upload(obj))
    assert first["outcome"] == second["outcome"] == "delivered"
    assert not first["duplicate"] and second["duplicate"]
    assert ingest.metric("trailerlink_ingest_duplicates_total") == duplicates_before + 1
    assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256


async def test_replayed_completion_event_repeats_the_outcome_only(ingest, objects, kafka_bootstrap):
    obj = objects()
    upload_id = ingest.upload(obj)
    ingest.wait_receipt(upload_id)
    key = f"trailer-01/{obj.meta.study_instance_uid}"
    [completed] = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_UPLOAD_COMPLETED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    stores_before = ingest.metric("trailerlink_ingest_pacs_store_seconds_count")
    producer = EventProducer(kafka_bootstrap)
    await producer.start()
    try:
        await producer.publish(topics.CENTRAL_UPLOAD_COMPLETED, key, completed.event)
    finally:
        await producer.stop()
    delivered = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_OBJECT_DELIVERED,
        lambda seen: len(seen) >= 2,
        match=lambda d: d.key == key,
    )
    assert {d.event.meta.event_id for d in delivered} == {f"{upload_id}-delivered"}
    assert [r["upload_id"] for r in ingest.receipts()].count(upload_id) == 1
    assert ingest.metric("trailerlink_ingest_pacs_store_seconds_count") == stores_before


def test_uid_conflict_keeps_both_and_alerts(ingest, pacs, objects, stored_sha):
    original = objects()
    ingest.wait_receipt(ingest.upload(original))
    spec = MGSpec(
        seed=999, study_uid=original.meta.study_instance_uid, sop_uid=original.meta.sop_instance_uid
    )
    impostor = objects(spec=spec)
    assert impostor.meta.dataset_sha256 != original.meta.dataset_sha256
    conflicts_before = ingest.metric("trailerlink_ingest_uid_conflicts_total")
    receipt = ingest.wait_receipt(ingest.upload(impostor))
    assert receipt["outcome"] == "failed"
    assert receipt["reason_code"] == "UID_CONFLICT"
    assert ingest.metric("trailerlink_ingest_uid_conflicts_total") == conflicts_before + 1
    # PACS still has the first copy; the second is kept at the ingest, not dropped.
    assert stored_sha(pacs, original.meta.sop_instance_uid) == original.meta.dataset_sha256
    kept = (
        ingest.storage
        / "conflicts"
        / original.meta.sop_instance_uid
        / f"{impostor.meta.dataset_sha256}.dcm"
    )
    assert kept.read_bytes() == impostor.original.read_bytes()


async def test_tampered_sealed_object_fails_verification_and_never_reaches_pacs(
    ingest, pacs, objects, kafka_bootstrap
):
    obj = objects()
    data = bytearray(obj.sealed.read_bytes())
    data[-100] ^= 0x01  # one bit in the last chunk's ciphertext
    obj.sealed.write_bytes(bytes(data))
    failures_before = ingest.metric("trailerlink_ingest_verify_failures_total")
    upload_id = ingest.upload(obj)
    receipt = ingest.wait_receipt(upload_id)
    assert receipt["outcome"] == "failed"
    assert receipt["reason_code"] == "VERIFY_FAILED"
    assert ingest.metric("trailerlink_ingest_verify_failures_total") == failures_before + 1
    assert pacs.find_instance(obj.meta.sop_instance_uid) is None
    key = f"trailer-01/{obj.meta.study_instance_uid}"
    [failed] = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_OBJECT_FAILED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    assert failed.event.upload_id == upload_id  # support correlates by it


def test_object_announced_with_another_hash_fails_verification(ingest, pacs, objects):
    obj = objects()
    obj.meta = dataclasses.replace(obj.meta, dataset_sha256="0" * 64)
    receipt = ingest.wait_receipt(ingest.upload(obj))
    assert receipt["outcome"] == "failed"
    assert receipt["reason_code"] == "VERIFY_FAILED"
    assert pacs.find_instance(obj.meta.sop_instance_uid) is None


def test_receipts_page_with_a_cursor(ingest, objects):
    all_receipts = ingest.receipts("trailer-01")
    assert all_receipts, "earlier tests left receipts"
    cursors = [int(r["cursor"]) for r in all_receipts]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    tail = ingest.receipts("trailer-01", after=cursors[0])
    assert [r["cursor"] for r in tail] == [str(c) for c in cursors[1:]]
