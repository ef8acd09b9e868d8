"""The spool index and outbox without Kafka: recording, duplicates, conflicts, orphans."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from trailerlink_events.messages import ObjectReceived, new_meta
from trailerlink_events.topics import OBJECT_DELIVERED, OBJECT_RECEIVED
from trailerlink_spool.index import (
    STATUS_CONFLICT,
    RecordOutcome,
    SpoolEntry,
    SpoolIndex,
)
from trailerlink_spool.layout import SpoolLayout, is_valid_uid
from trailerlink_spool.outbox import OutboxEvent
from trailerlink_spool.part10 import dataset_offset, file_meta_bytes


def _entry(layout: SpoolLayout, receipt: str, sop: str = "1.2.3.4", sha: str = "aa") -> SpoolEntry:
    return SpoolEntry(
        receipt_id=receipt,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae_title="MG1",
        file_size=10,
        file_sha256="f" * 64,
        dataset_size=5,
        dataset_sha256=sha * 32,
        stored_size=80,
        spool_path=f"objects/20260101/{sop}.{receipt}.tlspool",
        key_id="spool-x",
        received_at=1.0,
        number_of_frames=1,
    )


def _received(entry: SpoolEntry) -> list[OutboxEvent]:
    event = ObjectReceived(meta=new_meta("gateway", "trailer-test"))
    event.object.sop_instance_uid = entry.sop_instance_uid
    return [OutboxEvent(OBJECT_RECEIVED, entry.study_instance_uid, event)]


@pytest.fixture
def index(tmp_path: Path) -> SpoolIndex:
    return SpoolIndex(SpoolLayout(tmp_path / "spool"))


def test_first_copy_is_recorded_with_its_event(index: SpoolIndex) -> None:
    recorded = index.record(_entry(index.layout, "r1"), lambda o, e, earlier: _received(e))
    assert recorded.outcome is RecordOutcome.NEW
    assert len(recorded.outbox_seqs) == 1
    assert index.count() == 1
    pending = index.outbox.pending()
    assert [p.topic for p in pending] == [OBJECT_RECEIVED]
    assert ObjectReceived.FromString(pending[0].value).object.sop_instance_uid == "1.2.3.4"


def test_same_uid_same_bytes_is_a_duplicate_without_event(index: SpoolIndex) -> None:
    index.record(_entry(index.layout, "r1"), lambda o, e, earlier: _received(e))
    again = index.record(_entry(index.layout, "r2"), lambda o, e, earlier: _received(e))
    assert again.outcome is RecordOutcome.DUPLICATE
    assert again.entry.receipt_id == "r1"
    assert again.outbox_seqs == ()
    assert index.count() == 1
    assert len(index.outbox.pending()) == 1


def test_same_uid_different_bytes_keeps_both_as_conflict(index: SpoolIndex) -> None:
    index.record(_entry(index.layout, "r1"), lambda o, e, earlier: _received(e))
    seen: list[tuple[RecordOutcome, int]] = []

    def events(outcome: RecordOutcome, entry: SpoolEntry, earlier: list[SpoolEntry]) -> list:
        seen.append((outcome, len(earlier)))
        return []

    other = index.record(_entry(index.layout, "r2", sha="bb"), events)
    assert other.outcome is RecordOutcome.CONFLICT
    assert seen == [(RecordOutcome.CONFLICT, 1)]
    copies = index.copies("1.2.3.4")
    assert [c.receipt_id for c in copies] == ["r1", "r2"]
    assert copies[1].status == STATUS_CONFLICT


def test_event_failure_rolls_back_the_record(index: SpoolIndex) -> None:
    def broken(*_args: object) -> list[OutboxEvent]:
        event = ObjectReceived(meta=new_meta("gateway", "t"))
        return [OutboxEvent(OBJECT_DELIVERED, "k", event)]  # wrong topic for the type

    with pytest.raises(ValueError, match="carries"):
        index.record(_entry(index.layout, "r1"), broken)
    assert index.count() == 0
    assert index.outbox.pending() == []


def test_orphans_are_files_without_a_row(index: SpoolIndex) -> None:
    layout = index.layout
    entry = _entry(layout, "r1")
    index.record(entry, lambda o, e, earlier: [])
    kept = layout.root / entry.spool_path
    orphan = layout.objects_dir / "20260101" / "1.2.3.5.r9.tlspool"
    temp = layout.objects_dir / "20260101" / ".x.tlspool.abc.partial"
    for path in (kept, orphan, temp):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert index.orphans() == [orphan]


def test_outbox_waiters_wake_when_published(index: SpoolIndex) -> None:
    recorded = index.record(_entry(index.layout, "r1"), lambda o, e, earlier: _received(e))
    assert not index.outbox.wait_published(recorded.outbox_seqs, 0.05)
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(index.outbox.wait_published(recorded.outbox_seqs, 10))
    )
    waiter.start()
    index.outbox.mark_published(list(recorded.outbox_seqs))
    waiter.join(10)
    assert result == [True]
    assert index.outbox.pending() == []


def test_index_survives_reopen(tmp_path: Path) -> None:
    layout = SpoolLayout(tmp_path / "spool")
    first = SpoolIndex(layout)
    first.record(_entry(layout, "r1"), lambda o, e, earlier: _received(e))
    first.db.close()
    again = SpoolIndex(layout)
    assert again.get("r1") == replace(_entry(layout, "r1"))
    assert len(again.outbox.pending()) == 1


def test_layout_refuses_paths_that_are_not_uids(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    layout = SpoolLayout(tmp_path)
    assert is_valid_uid("1.2.840.10008.1.2")
    for bad in ("", "../../etc", "1.2.a", "1" * 65, "1..2"):
        assert not is_valid_uid(bad)
        with pytest.raises(ValueError):
            layout.object_path(bad, "r", datetime.now(UTC))
    with pytest.raises(ValueError):
        layout.resolve("../outside")


def test_part10_envelope_round_trip() -> None:
    head = file_meta_bytes("1.2.840.10008.5.1.4.1.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "MG1")
    assert head[128:132] == b"DICM"
    assert dataset_offset(head + b"\x08\x00\x16\x00") == len(head)
