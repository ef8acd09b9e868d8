"""The C-STORE core without a network: durable encrypted copies, their events,
duplicates, conflicts, refusals that leave nothing behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import SpoolKey, SpoolKeyring, decrypt_to_bytes
from trailerlink_events.messages import FailureReason, ObjectFailed, ObjectReceived, Priority
from trailerlink_events.topics import OBJECT_FAILED, OBJECT_RECEIVED
from trailerlink_gateway.intake import Intake, StoreRequest
from trailerlink_gateway.statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
)
from trailerlink_spool.index import SpoolIndex
from trailerlink_spool.layout import SpoolLayout
from trailerlink_spool.part10 import file_meta_bytes
from trailerlink_testing.dicom import (
    DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION,
    SyntheticObject,
    dataset_bytes,
    write_synthetic,
)

TS = "1.2.840.10008.1.2.1"


class Disk:
    """A free-space figure the test controls."""

    def __init__(self) -> None:
        self.free = 10**12

    def __call__(self, _path: Path) -> int:
        return self.free


@pytest.fixture
def disk() -> Disk:
    return Disk()


@pytest.fixture
def key() -> SpoolKey:
    return SpoolKey.generate()


@pytest.fixture
def intake(tmp_path: Path, key: SpoolKey, disk: Disk) -> Intake:
    layout = SpoolLayout(tmp_path / "spool")
    return Intake(
        layout=layout,
        index=SpoolIndex(layout),
        key=key,
        trailer_id="trailer-test",
        min_free_bytes=10**9,
        free_bytes=disk,
    )


@pytest.fixture
def image(tmp_path: Path) -> SyntheticObject:
    return write_synthetic(tmp_path / "in" / "a.dcm", rows=128, columns=96)


def store(
    intake: Intake,
    data: bytes,
    obj: SyntheticObject,
    *,
    sop: str | None = None,
    sop_class: str = DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION,
    priority: int = 0,
    chunk: int = 16384,
):
    incoming = intake.begin(
        StoreRequest(sop_class, sop or obj.sop_instance_uid, TS, "MG1", priority)
    )
    for i in range(0, len(data), chunk):
        incoming.write(data[i : i + chunk])
    return incoming.finish()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "objects" in p.parts)


def test_stored_object_is_encrypted_part10_of_the_bytes_received(
    intake: Intake, image: SyntheticObject, key: SpoolKey
) -> None:
    data = dataset_bytes(image.path)
    result = store(intake, data, image)
    assert result.status == SUCCESS and result.outcome == "stored"
    entry = result.entry
    assert entry is not None
    path = intake.layout.resolve(entry.spool_path)
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM" and b"SYNTHETIC" not in raw and data[:200] not in raw
    plain = decrypt_to_bytes(path, SpoolKeyring(key))
    meta = file_meta_bytes(DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION, image.sop_instance_uid, TS, "MG1")
    assert plain == meta + data
    assert entry.file_sha256 == hashlib.sha256(plain).hexdigest()
    assert entry.dataset_sha256 == hashlib.sha256(data).hexdigest()
    assert (entry.file_size, entry.dataset_size) == (len(plain), len(data))
    assert entry.study_instance_uid == image.study_instance_uid
    [pending] = intake.index.outbox.pending()
    assert pending.topic == OBJECT_RECEIVED and pending.key == image.study_instance_uid
    event = ObjectReceived.FromString(pending.value)
    assert event.object.sop_instance_uid == image.sop_instance_uid
    assert event.object.series_instance_uid == image.series_instance_uid
    assert event.object.transfer_syntax_uid == TS
    assert event.dataset_sha256 == entry.dataset_sha256
    assert event.file_sha256 == entry.file_sha256
    assert event.spool_path == entry.spool_path and event.spool_key_id == key.key_id
    assert event.calling_ae_title == "MG1" and event.number_of_frames == 1
    assert event.priority == Priority.PRIORITY_ROUTINE
    assert event.received_at.seconds > 0 and event.meta.producer == "gateway"


def test_high_priority_store_is_urgent(intake: Intake, image: SyntheticObject) -> None:
    store(intake, dataset_bytes(image.path), image, priority=1)
    [pending] = intake.index.outbox.pending()
    assert ObjectReceived.FromString(pending.value).priority == Priority.PRIORITY_URGENT


def test_resend_of_same_bytes_is_success_without_a_second_copy_or_event(
    intake: Intake, image: SyntheticObject
) -> None:
    data = dataset_bytes(image.path)
    first = store(intake, data, image)
    again = store(intake, data, image, chunk=999)
    assert again.status == SUCCESS and again.outcome == "duplicate"
    assert again.entry == first.entry
    assert len(files_under(intake.layout.root)) == 1
    assert len(intake.index.outbox.pending()) == 1


def test_same_uid_with_different_bytes_keeps_both_and_raises_a_conflict(
    intake: Intake, image: SyntheticObject, tmp_path: Path
) -> None:
    store(intake, dataset_bytes(image.path), image)
    other = write_synthetic(
        tmp_path / "in" / "b.dcm",
        rows=128,
        columns=96,
        seed=7,
        study_instance_uid=image.study_instance_uid,
        series_instance_uid=image.series_instance_uid,
        sop_instance_uid=image.sop_instance_uid,
    )
    result = store(intake, dataset_bytes(other.path), other)
    assert result.status == SUCCESS and result.outcome == "conflict"
    assert len(files_under(intake.layout.root)) == 2
    topics = [p.topic for p in intake.index.outbox.pending()]
    assert topics == [OBJECT_RECEIVED, OBJECT_FAILED]
    failed = ObjectFailed.FromString(intake.index.outbox.pending()[1].value)
    assert failed.reason_code == FailureReason.FAILURE_REASON_UID_CONFLICT
    assert failed.permanent and failed.dataset_sha256 == result.entry.dataset_sha256


def test_below_watermark_refuses_until_space_frees(
    intake: Intake, image: SyntheticObject, disk: Disk
) -> None:
    data = dataset_bytes(image.path)
    disk.free = intake.min_free_bytes - 1
    refused = store(intake, data, image)
    assert refused.status == OUT_OF_RESOURCES
    assert files_under(intake.layout.root) == []
    assert intake.index.count() == 0
    disk.free = intake.min_free_bytes * 2
    assert store(intake, data, image).status == SUCCESS


def test_disk_filling_during_a_store_refuses_it(intake: Intake, tmp_path: Path, disk: Disk) -> None:
    big = write_synthetic(tmp_path / "in" / "big.dcm", rows=2048, columns=2048)  # 8 MiB
    data = dataset_bytes(big.path) * 3
    incoming = intake.begin(
        StoreRequest(DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION, big.sop_instance_uid, TS, "MG1")
    )
    incoming.write(data[: len(data) // 2])
    disk.free = intake.min_free_bytes // 4
    incoming.write(data[len(data) // 2 :])
    assert incoming.finish().status == OUT_OF_RESOURCES
    assert files_under(intake.layout.root) == []


@pytest.mark.parametrize("garbage", [b"\x08\x00\x16\x00UI\xff\xff" + b"x" * 100, b"\x01" * 5])
def test_unparseable_data_set_is_refused_and_leaves_nothing(
    intake: Intake, image: SyntheticObject, garbage: bytes
) -> None:
    result = store(intake, garbage, image)
    assert result.status == CANNOT_UNDERSTAND
    assert "parse" in result.comment
    assert files_under(intake.layout.root) == []
    assert intake.index.outbox.pending() == []


def test_truncated_data_set_is_refused(intake: Intake, image: SyntheticObject) -> None:
    data = dataset_bytes(image.path)
    assert store(intake, data[:-10], image).status == CANNOT_UNDERSTAND
    assert files_under(intake.layout.root) == []


def test_request_and_data_set_must_agree(intake: Intake, image: SyntheticObject) -> None:
    data = dataset_bytes(image.path)
    assert store(intake, data, image, sop="1.2.3.999").status == CANNOT_UNDERSTAND
    assert (
        store(intake, data, image, sop_class="1.2.840.10008.5.1.4.1.1.1.2.1").status
        == DATASET_DOES_NOT_MATCH_SOP_CLASS
    )
    assert (
        store(intake, data, image, sop_class="1.2.840.10008.5.1.4.1.1.2").status
        == SOP_CLASS_NOT_SUPPORTED
    )
    assert store(intake, data, image, sop="../../etc/passwd").status == CANNOT_UNDERSTAND
    assert files_under(intake.layout.root) == []


def test_abandoned_store_leaves_nothing(intake: Intake, image: SyntheticObject) -> None:
    data = dataset_bytes(image.path)
    incoming = intake.begin(
        StoreRequest(DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION, image.sop_instance_uid, TS, "MG1")
    )
    incoming.write(data[:5000])
    incoming.abandon()
    assert files_under(intake.layout.root) == []
    assert incoming.finish().status != SUCCESS


def test_recover_removes_temporaries_and_orphans_but_not_recorded_objects(
    intake: Intake, image: SyntheticObject
) -> None:
    kept = store(intake, dataset_bytes(image.path), image).entry
    day = intake.layout.resolve(kept.spool_path).parent
    (day / ".1.2.3.r.tlspool.xyz.partial").write_bytes(b"half")
    (day / "1.2.3.4.deadbeef.tlspool").write_bytes(b"never acknowledged")
    assert intake.recover() == (1, 1)
    assert files_under(intake.layout.root) == [intake.layout.resolve(kept.spool_path)]
