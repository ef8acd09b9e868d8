"""Fault tests: what a C-STORE success promises must survive kill -9 of the gateway,
a broker outage and a full disk (DESIGN.md, "What the system promises" 1)."""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import decrypt_to_bytes
from trailerlink_events.topics import OBJECT_RECEIVED
from trailerlink_spool.part10 import dataset_offset
from trailerlink_testing.dicom import dataset_bytes, write_study
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka


def _received_once(gateway, topic_events, sops: set[str]) -> None:
    wait_until(lambda: gateway.index().outbox.pending_count() == 0, 90, "outbox drained")
    trailer = gateway.env["TRAILERLINK_TRAILER_ID"]
    counts = Counter(
        e.object.sop_instance_uid
        for e in topic_events(OBJECT_RECEIVED)
        if e.meta.trailer_id == trailer
    )
    assert {s: counts[s] for s in sops} == dict.fromkeys(sops, 1)


def _durable_and_exact(gateway, path: Path, sop: str) -> None:
    copies = gateway.index().copies(sop)
    assert len(copies) == 1, f"{len(copies)} copies of an acknowledged object"
    plain = decrypt_to_bytes(gateway.layout.resolve(copies[0].spool_path), gateway.keyring)
    sent = dataset_bytes(path)
    assert plain[dataset_offset(plain) :] == sent
    assert copies[0].dataset_sha256 == hashlib.sha256(sent).hexdigest()


@pytest.mark.slow
def test_store_success_means_durable_after_kill9(
    gateway_factory, modality, topic_events, tmp_path: Path
) -> None:
    gateway = gateway_factory()
    study = write_study(tmp_path / "study", 100, rows=256, columns=256)
    sop_of = {o.path: o.sop_instance_uid for o in study}
    acknowledged: set[Path] = set()
    rng = random.Random(20260101)
    kills = 0
    for _round in range(12):
        remaining = [o.path for o in study if o.path not in acknowledged]
        if not remaining:
            break
        sender = modality.storescu_popen(gateway.dicom_port, remaining)
        if kills < 4 and len(remaining) > 20:
            # Kill at a random point of the run: after a random number of new objects,
            # while the next one is (most likely) on the wire or being committed.
            target = len(gateway.layout.iter_object_files()) + rng.randint(3, 15)
            wait_until(
                lambda t=target, s=sender: (
                    s.poll() is not None or len(gateway.layout.iter_object_files()) >= t
                ),
                120,
                "progress",
            )
            gateway.kill9()
            kills += 1
        run = modality.finish_storescu(sender)
        acknowledged.update(run.succeeded)
        if not gateway.proc.running():
            gateway.restart()  # recovery runs before the DICOM port opens
            assert not list(gateway.layout.objects_dir.rglob("*.partial"))
            assert gateway.index().orphans() == []
    assert kills >= 3
    assert acknowledged == set(sop_of), "retries of unacknowledged images must succeed"
    for path in sorted(acknowledged):
        _durable_and_exact(gateway, path, sop_of[path])
    assert gateway.index().count() == 100
    _received_once(gateway, topic_events, set(sop_of.values()))


def test_stores_succeed_while_kafka_is_down_and_events_follow(
    gateway_factory, kafka_broker, modality, topic_events, tmp_path: Path
) -> None:
    gateway = gateway_factory(publish_wait_seconds=1)
    warmup = write_study(tmp_path / "warmup", 1, rows=64, columns=64)
    assert modality.storescu(gateway.dicom_port, [warmup[0].path]).succeeded
    wait_until(lambda: gateway.index().outbox.pending_count() == 0, 30, "warm-up event")
    study = write_study(tmp_path / "study", 6, rows=128, columns=128)
    kafka_broker.stop()
    try:
        run = modality.storescu(gateway.dicom_port, [o.path for o in study])
        assert len(run.succeeded) == 6, run.output
        assert gateway.index().outbox.pending_count() == 6
    finally:
        kafka_broker.start()
    _received_once(gateway, topic_events, {o.sop_instance_uid for o in [*warmup, *study]})
    for o in study:
        _durable_and_exact(gateway, o.path, o.sop_instance_uid)


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 96 MiB tmpfs, so that 'the disk is full' is real and nobody else's."""
    mount = tmp_path / "spoolfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_stores_refused_below_watermark_until_space_frees(
    gateway_factory, modality, small_filesystem: Path, tmp_path: Path
) -> None:
    gateway = gateway_factory(
        spool_dir=small_filesystem / "spool", spool_min_free_bytes=48 * 1024 * 1024
    )
    study = write_study(tmp_path / "study", 2, rows=128, columns=128)
    filler = small_filesystem / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (64 * 1024 * 1024))  # leaves about 32 MiB free
    refused = modality.storescu(gateway.dicom_port, [study[0].path])
    assert refused.succeeded == [], refused.output
    assert "refused: outofresources" in refused.output.lower()
    assert gateway.metric("trailerlink_gateway_rejects_total", reason="out_of_resources") == 1
    assert gateway.layout.iter_object_files() == []
    filler.unlink()
    accepted = modality.storescu(gateway.dicom_port, [o.path for o in study])
    assert len(accepted.succeeded) == 2, accepted.output
    assert gateway.metric("trailerlink_gateway_spool_free_bytes") > 48 * 1024 * 1024
