"""A sealed file that is missing, corrupt or cut short on the trailer is not retried
forever in silence: ObjectFailed (with the reason) on the real trailer broker, counted in
a metric, out of the send queue; the objects around it still go. Against tusd."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import ObjectFailed
from trailerlink_events.topics import OBJECT_FAILED
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.procs import http_get
from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.queue import SendQueue
from trailerlink_uplink.sender import FAILED_STAGE, SealedFileProblem

from .conftest import Outgoing
from .receipts_peer import ReceiptsPeer
from .test_uplink_service import Uplink, _group_at_end, _publish, sealed_event

pytestmark = pytest.mark.kafka


def _metric(text: str, name: str, kind: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_missing_and_corrupt_sealed_files_fail_loudly_and_leave_the_queue(
    tmp_path: Path, kafka_bootstrap: str, unique_group: str, tusd: Tusd, outgoing: Outgoing
) -> None:
    await _group_at_end(kafka_bootstrap, unique_group)
    good = outgoing.sealed(80_000)
    gone = outgoing.sealed(80_000)
    bad = outgoing.sealed(80_000)
    (outgoing.root / gone.sealed_path).unlink()
    damaged = bytearray(outgoing.read(bad))
    damaged[1000] ^= 0xFF  # same size, different bytes
    (outgoing.root / bad.sealed_path).write_bytes(bytes(damaged))
    with ReceiptsPeer() as receipts:
        uplink = Uplink(tmp_path, kafka_bootstrap, tusd.url, receipts.url, unique_group)
        with uplink.proc:
            uplink.proc.wait_ready(uplink.url("/readyz"), timeout=90)
            await _publish(
                kafka_bootstrap, [sealed_event(o, uplink.trailer_id) for o in (gone, bad, good)]
            )
            mine = {gone.sop_instance_uid, bad.sop_instance_uid}
            failed = await read_events(
                kafka_bootstrap,
                OBJECT_FAILED,
                lambda seen: len(seen) >= 2,
                match=lambda d: d.event is not None and d.event.object.sop_instance_uid in mine,
                timeout=60,
            )
            by_sop = {d.event.object.sop_instance_uid: d for d in failed}
            assert set(by_sop) == mine
            for obj, why in (
                (gone, "sealed file missing"),
                (bad, "sealed file SHA-256 differs from its event"),
            ):
                event = by_sop[obj.sop_instance_uid].event
                assert isinstance(event, ObjectFailed)
                assert event.reason == why and event.stage == FAILED_STAGE and event.permanent
                assert event.dataset_sha256 == obj.dataset_sha256
                assert by_sop[obj.sop_instance_uid].key == obj.study_instance_uid

            async def settled() -> bool:
                return uplink.states() == {"uploaded": 1, "failed": 2}

            await async_wait_until(settled, 60, "good object uploaded, two failed")
            queue = SendQueue(uplink.data_dir / "uplink" / "queue.sqlite")
            try:
                failures = {
                    r.sop_instance_uid: r.failure
                    for r in (
                        queue.find_sent(o.sop_instance_uid, o.dataset_sha256)[0]
                        for o in (gone, bad)
                    )
                }
            finally:
                queue.close()
            assert failures == {
                gone.sop_instance_uid: "uplink: sealed file missing",
                bad.sop_instance_uid: "uplink: sealed file SHA-256 differs from its event",
            }
            ups = tusd.uploads()
            assert [u["MetaData"]["sop_instance_uid"] for u in ups] == [good.sop_instance_uid]
            assert tusd.data(str(ups[0]["ID"])) == outgoing.read(good)

            metrics = http_get(uplink.url("/metrics"))
            name = "trailerlink_uplink_sealed_file_failures_total"
            assert _metric(metrics, name, "missing") == 1
            assert _metric(metrics, name, "corrupt") == 1
        log = (tmp_path / "uplink.log").read_text()
        assert log.count("taken out of the send queue") == 2


async def test_sealed_file_cut_short_mid_upload_ends_the_upload_and_publishes_failed(
    queue: SendQueue,
    outgoing: Outgoing,
    tusd: Tusd,
    make_rig: object,
    running: object,
    kafka_bootstrap: str,
) -> None:
    """The file shrinks while its upload is part-way: the server's partial upload is
    terminated, ObjectFailed goes out, the next object is sent."""
    victim = outgoing.sealed(600_000)
    after = outgoing.sealed(50_000)
    for obj in (victim, after):
        queue.enqueue(obj)
    rig = make_rig(queue, outgoing, tusd.url, chunk=64 * 1024, rate=200_000)  # type: ignore[operator]
    producer = EventProducer(kafka_bootstrap, client_id="test-uplink-sender")
    await producer.start()
    rig.sender.publisher = producer
    try:
        running(rig)  # type: ignore[operator]

        async def part_way() -> bool:
            ups = [
                u
                for u in tusd.uploads()
                if u["MetaData"]["sop_instance_uid"] == victim.sop_instance_uid
            ]
            return bool(ups) and tusd.offset(str(ups[0]["ID"])) >= 128 * 1024

        await async_wait_until(part_way, 30, "victim part-way up")
        os.truncate(outgoing.root / victim.sealed_path, 200_000)

        failed = await read_events(
            kafka_bootstrap,
            OBJECT_FAILED,
            lambda seen: len(seen) >= 1,
            match=lambda d: (
                d.event is not None and d.event.object.sop_instance_uid == victim.sop_instance_uid
            ),
            timeout=30,
        )
        assert failed[0].event.reason == "sealed file shorter than its event says"

        async def after_sent() -> bool:
            return queue.states() == {"failed": 1, "uploaded": 1}

        await async_wait_until(after_sent, 30, "next object sent after the failure")
        assert [u["MetaData"]["sop_instance_uid"] for u in tusd.uploads()] == [
            after.sop_instance_uid
        ], "the victim's partial upload is terminated at the server"
    finally:
        await producer.stop()


async def test_a_sealed_path_that_cannot_be_read_is_unreadable_not_missing(
    queue: SendQueue, outgoing: Outgoing, make_rig: object
) -> None:
    """An OS error reading the file (here: a directory where the file should be, with the
    event's size matching, so only the read fails) is named ``unreadable``."""
    obj = outgoing.sealed(10)
    path = outgoing.root / obj.sealed_path
    path.unlink()
    path.mkdir()
    queue.enqueue(dataclasses.replace(obj, sealed_size=path.stat().st_size))
    row = queue.next_object()
    assert row is not None
    rig = make_rig(queue, outgoing, "http://127.0.0.1:9/files/")  # type: ignore[operator]
    with pytest.raises(SealedFileProblem) as caught:
        rig.sender._check_file(row)
    assert caught.value.kind == "unreadable"
    assert str(caught.value) == "sealed file unreadable (IsADirectoryError)"
