"""The codec's core without Kafka: spool object in, sealed object out, idempotent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trailerlink_codec.sealer import BadJob, Sealer, SealJob, SourceCorrupt, SpoolKeyMissing
from trailerlink_crypto.atrest import SpoolKey, SpoolKeyring
from trailerlink_sealed import (
    OpeningKey,
    OpeningKeyring,
    RecipientKeyring,
    SealOptions,
    read_sealed_header,
    unseal_to_bytes,
)
from trailerlink_sealed.testdata import MGSpec

from .conftest import Spool, SpoolObject


def _sealer(spool: Spool, tmp_path: Path, public_keys_dir: Path, **options: object) -> Sealer:
    return Sealer(
        spool.root,
        SpoolKeyring(spool.key),
        tmp_path / "outgoing",
        RecipientKeyring.load(public_keys_dir),
        SealOptions(**options),
    )


def _job(obj: SpoolObject) -> SealJob:
    event = obj.event("t")
    return SealJob(
        event.spool_path,
        event.file_size_bytes,
        event.file_sha256,
        event.dataset_sha256,
        event.object.sop_instance_uid,
    )


def test_spool_object_is_sealed_and_opens_to_the_original(
    spool: Spool, tmp_path: Path, public_keys_dir: Path, dc_key: OpeningKey
) -> None:
    obj = spool.put(MGSpec(rows=256, cols=192, private_after_pixels=True))
    sealed = _sealer(spool, tmp_path, public_keys_dir).seal(_job(obj))
    assert not sealed.reused
    assert sealed.sealed_path == obj.spool_path.replace(".tlspool", ".tlsealed")
    assert sealed.codec == "jpegls+zstd" and sealed.key_id == dc_key.key_id
    assert sealed.ratio > 1.5
    header = read_sealed_header(sealed.absolute_path)
    assert header.dataset_sha256 == obj.event("t").dataset_sha256
    assert header.sop_instance_uid == obj.spec.sop_uid
    assert unseal_to_bytes(sealed.absolute_path, OpeningKeyring([dc_key])) == obj.data


def test_sealing_again_reuses_the_sealed_object(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    obj = spool.put(MGSpec(rows=64, cols=64))
    sealer = _sealer(spool, tmp_path, public_keys_dir)
    first = sealer.seal(_job(obj))
    stamp = os.stat(first.absolute_path).st_mtime_ns
    second = sealer.seal(_job(obj))
    assert second.reused
    assert (second.sealed_path, second.sealed_sha256) == (first.sealed_path, first.sealed_sha256)
    assert os.stat(first.absolute_path).st_mtime_ns == stamp
    files = [p for p in (tmp_path / "outgoing").rglob("*") if p.is_file()]
    assert files == [first.absolute_path]


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.tlspool", "objects/../../x", ""])
def test_paths_outside_the_spool_are_refused(
    path: str, spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    with pytest.raises(BadJob):
        _sealer(spool, tmp_path, public_keys_dir).seal(SealJob(path, 10, "0" * 64))


def test_missing_spool_object_is_a_bad_job(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    with pytest.raises(BadJob, match="does not exist"):
        _sealer(spool, tmp_path, public_keys_dir).seal(
            SealJob("objects/20260101/1.2.3.x.tlspool", 10, "0" * 64)
        )


def test_object_not_matching_its_event_is_refused_and_leaves_nothing(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    obj = spool.put(MGSpec(rows=64, cols=64))
    job = _job(obj)
    wrong = SealJob(job.spool_path, job.file_size, "ab" * 32, job.dataset_sha256)
    with pytest.raises(SourceCorrupt):
        _sealer(spool, tmp_path, public_keys_dir).seal(wrong)
    assert [p for p in (tmp_path / "outgoing").rglob("*") if p.is_file()] == []


def test_tampered_spool_file_is_refused(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    obj = spool.put(MGSpec(rows=64, cols=64))
    path = spool.root / obj.spool_path
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(SourceCorrupt):
        _sealer(spool, tmp_path, public_keys_dir).seal(_job(obj))


def test_unknown_spool_key_is_a_retryable_problem(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    obj = spool.put(MGSpec(rows=32, cols=32))
    sealer = Sealer(
        spool.root,
        SpoolKeyring(SpoolKey.generate()),
        tmp_path / "outgoing",
        RecipientKeyring.load(public_keys_dir),
        SealOptions(),
    )
    with pytest.raises(SpoolKeyMissing):
        sealer.seal(_job(obj))


def test_rotation_new_objects_use_the_current_key_old_sealed_ones_are_reused(
    spool: Spool, tmp_path: Path, public_keys_dir: Path, dc_key: OpeningKey
) -> None:
    old = spool.put(MGSpec(rows=32, cols=32))
    first = _sealer(spool, tmp_path, public_keys_dir).seal(_job(old))
    new_key = OpeningKey.generate()
    (public_keys_dir / "new.pem").write_bytes(new_key.recipient.to_pem())
    rotated = Sealer(
        spool.root,
        SpoolKeyring(spool.key),
        tmp_path / "outgoing",
        RecipientKeyring.load(public_keys_dir, new_key.key_id),
        SealOptions(),
    )
    assert rotated.seal(_job(old)).sealed_sha256 == first.sealed_sha256  # still openable
    fresh = rotated.seal(_job(spool.put(MGSpec(rows=32, cols=32))))
    assert fresh.key_id == new_key.key_id != dc_key.key_id


def test_a_committed_sealed_object_is_never_replaced_by_a_racing_writer(
    spool: Spool, tmp_path: Path, public_keys_dir: Path
) -> None:
    obj = spool.put(MGSpec(rows=64, cols=64))
    sealer = _sealer(spool, tmp_path, public_keys_dir)
    first = sealer.seal(_job(obj))
    # Simulate the race: another writer's seal() finds the object committed meanwhile.
    from trailerlink_sealed import seal

    plain = tmp_path / "plain.dcm"
    plain.write_bytes(obj.data)
    with pytest.raises(FileExistsError):
        seal(
            plain,
            first.absolute_path,
            sealer.recipients.current,
            overwrite=False,
            expected_size=len(obj.data),
            expected_sha256=_job(obj).file_sha256,
        )
    assert sealer.seal(_job(obj)).sealed_sha256 == first.sealed_sha256


def test_a_damaged_sealed_object_is_replaced(
    spool: Spool, tmp_path: Path, public_keys_dir: Path, dc_key: OpeningKey
) -> None:
    obj = spool.put(MGSpec(rows=64, cols=64))
    sealer = _sealer(spool, tmp_path, public_keys_dir)
    first = sealer.seal(_job(obj))
    first.absolute_path.write_bytes(b"garbage")
    again = sealer.seal(_job(obj))
    assert not again.reused
    assert unseal_to_bytes(again.absolute_path, OpeningKeyring([dc_key])) == obj.data
