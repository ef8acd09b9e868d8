"""The janitor deletes received and sealed files of delivered objects after retention
(or under disk pressure, oldest delivery first) and never anything undelivered."""

from __future__ import annotations

import time
from pathlib import Path

from trailerlink_uplink.janitor import Janitor
from trailerlink_uplink.queue import SendQueue

from .conftest import Outgoing

DAY = 86400.0


def _spool_copy(spool: Path, sealed_rel: str) -> Path:
    path = spool / sealed_rel.removesuffix(".tlsealed")
    path = path.with_name(path.name + ".tlspool")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"encrypted received copy")
    return path


def _setup(
    tmp_path: Path,
    queue: SendQueue,
    outgoing: Outgoing,
    states: list[str],
    delivered_days_ago: list[float | None],
) -> list[tuple[Path, Path]]:
    spool = tmp_path / "spool"
    files = []
    now = time.time()
    for state, ago in zip(states, delivered_days_ago, strict=True):
        obj = outgoing.sealed(1000)
        queue.enqueue(obj)
        row = queue.find_sent(obj.sop_instance_uid, obj.dataset_sha256)[0]
        if state in ("uploaded", "delivered", "failed"):
            queue.mark_uploaded(row.id)
        if state == "delivered":
            queue.mark_delivered(row.id, now - (ago or 0) * DAY)
        if state == "failed":
            queue.mark_failed(row.id, "FAILURE_REASON_PACS_REFUSED")
        files.append((outgoing.root / obj.sealed_path, _spool_copy(spool, obj.sealed_path)))
    return files


def test_only_delivered_and_past_retention_is_deleted(
    tmp_path: Path, queue: SendQueue, outgoing: Outgoing
) -> None:
    files = _setup(
        tmp_path,
        queue,
        outgoing,
        ["delivered", "delivered", "uploaded", "queued", "failed"],
        [8, 6, None, None, None],
    )
    janitor = Janitor(
        queue,
        outgoing.root,
        tmp_path / "spool",
        retention_seconds=7 * DAY,
        pressure_free_fraction=0.10,
        free_fraction=lambda _p: 0.5,
    )
    assert janitor.sweep() == 1
    (old_sealed, old_spool), *rest = files
    assert not old_sealed.exists() and not old_spool.exists()
    for sealed, received in rest:
        assert sealed.exists() and received.exists()
    assert janitor.sweep() == 0  # idempotent


def test_disk_pressure_frees_delivered_oldest_first_but_never_undelivered(
    tmp_path: Path, queue: SendQueue, outgoing: Outgoing
) -> None:
    files = _setup(
        tmp_path,
        queue,
        outgoing,
        ["delivered", "delivered", "uploaded", "queued"],
        [2, 1, None, None],
    )
    free = {"fraction": 0.01}

    def free_fraction(_p: Path) -> float:
        # Every object deleted frees a little; pressure lifts after the first one here.
        remaining = sum(1 for sealed, _ in files if sealed.exists())
        return 0.01 if remaining == 4 else 0.5

    janitor = Janitor(
        queue,
        outgoing.root,
        tmp_path / "spool",
        retention_seconds=7 * DAY,
        pressure_free_fraction=0.10,
        free_fraction=free_fraction,
    )
    assert janitor.sweep() == 1
    assert not files[0][0].exists() and files[1][0].exists()
    # Under pressure that never lifts, still nothing undelivered goes.
    janitor = Janitor(
        queue,
        outgoing.root,
        tmp_path / "spool",
        retention_seconds=7 * DAY,
        pressure_free_fraction=0.10,
        free_fraction=lambda _p: free["fraction"],
    )
    janitor.sweep()
    assert files[2][0].exists() and files[3][0].exists()
    assert files[2][1].exists() and files[3][1].exists()


def test_gateway_index_is_told_when_a_received_copy_is_deleted(
    tmp_path: Path, queue: SendQueue, outgoing: Outgoing
) -> None:
    from dataclasses import replace

    from trailerlink_spool.index import STATUS_PURGED, STATUS_RECEIVED, SpoolEntry, SpoolIndex
    from trailerlink_spool.layout import SpoolLayout

    files = _setup(tmp_path, queue, outgoing, ["delivered", "queued"], [8, None])
    layout = SpoolLayout(tmp_path / "spool")
    index = SpoolIndex(layout)
    template = SpoolEntry(
        receipt_id="r0",
        sop_instance_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        study_instance_uid="1.2",
        series_instance_uid="1.2.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae_title="MODALITY",
        file_size=1,
        file_sha256="a" * 64,
        dataset_size=1,
        dataset_sha256="b" * 64,
        stored_size=23,
        spool_path="",
        key_id="spool-x",
        received_at=time.time(),
        number_of_frames=1,
    )
    for n, (_sealed, received) in enumerate(files):
        index.record(
            replace(
                template,
                receipt_id=f"r{n}",
                sop_instance_uid=f"1.2.3.{n}",
                spool_path=layout.relative(received),
            ),
            lambda *_a: [],
        )
    janitor = Janitor(
        queue,
        outgoing.root,
        tmp_path / "spool",
        retention_seconds=7 * DAY,
        pressure_free_fraction=0.10,
        free_fraction=lambda _p: 0.5,
    )
    assert janitor.sweep() == 1
    assert index.get("r0").status == STATUS_PURGED  # type: ignore[union-attr]
    assert index.get("r1").status == STATUS_RECEIVED  # type: ignore[union-attr]
    assert index.stored_bytes() == 23  # the purged copy no longer counts
