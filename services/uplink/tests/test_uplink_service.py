"""The uplink as a real process against the real broker and tusd: object-sealed in,
uploads out, kill -9 mid-upload resumes the same upload, receipts become
object-delivered / object-failed on the trailer broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import (
    ObjectDelivered,
    ObjectFailed,
    ObjectIdentity,
    ObjectSealed,
    new_meta,
    timestamp,
)
from trailerlink_events.topics import OBJECT_DELIVERED, OBJECT_FAILED, OBJECT_SEALED, topic
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get
from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.queue import NewObject, SendQueue

from .conftest import Outgoing
from .receipts_peer import ReceiptsPeer

pytestmark = pytest.mark.kafka


def sealed_event(obj: NewObject, trailer_id: str) -> ObjectSealed:
    return ObjectSealed(
        meta=new_meta("codec", trailer_id),
        object=ObjectIdentity(
            study_instance_uid=obj.study_instance_uid,
            series_instance_uid=obj.series_instance_uid,
            sop_instance_uid=obj.sop_instance_uid,
            sop_class_uid=obj.sop_class_uid,
            transfer_syntax_uid=obj.transfer_syntax_uid,
        ),
        file_sha256=obj.file_sha256,
        dataset_sha256=obj.dataset_sha256,
        sealed_path=obj.sealed_path,
        sealed_size_bytes=obj.sealed_size,
        sealed_sha256=obj.sealed_sha256,
        codec=obj.codec,
        key_id=obj.key_id,
        received_at=timestamp(),
        sealed_at=timestamp(),
        priority=obj.priority,
    )


async def _group_at_end(bootstrap: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(OBJECT_SEALED, p) for p in range(topic(OBJECT_SEALED).partitions)]
        consumer.assign(parts)
        await consumer.commit(dict(await consumer.end_offsets(parts)))
    finally:
        await consumer.stop()


class Uplink:
    def __init__(
        self, tmp: Path, bootstrap: str, tus_url: str, receipts_url: str, group: str, **extra: str
    ) -> None:
        self.http_port = free_port()
        self.trailer_id = f"trailer-{uuid.uuid4().hex[:6]}"
        self.data_dir = tmp / "data"
        env = {
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRAILERLINK_HTTP_PORT": str(self.http_port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_DATA_DIR": str(self.data_dir),
            "TRAILERLINK_OUTGOING_DIR": str(tmp / "outgoing"),
            "TRAILERLINK_TRAILER_ID": self.trailer_id,
            "TRAILERLINK_CONSUMER_GROUP": group,
            "TRAILERLINK_INGEST_URL": tus_url.split("/files/")[0],
            "TRAILERLINK_TUS_PATH": "/files/",
            "TRAILERLINK_RECEIPTS_URL": receipts_url,
            "TRAILERLINK_RECEIPTS_POLL_SECONDS": "0.3",
            "TRAILERLINK_PROBE_INTERVAL_SECONDS": "0.3",
            "TRAILERLINK_CHUNK_SIZE_BYTES": str(64 * 1024),
            **extra,
        }
        self.proc = ServiceProcess(
            [console_script("trailerlink-uplink")], env=env, log_path=tmp / "uplink.log"
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def queue(self) -> SendQueue:
        return SendQueue(self.data_dir / "uplink" / "queue.sqlite")

    def states(self) -> dict[str, int]:
        q = self.queue()
        try:
            return q.states()
        finally:
            q.close()


async def _publish(bootstrap: str, events: list[ObjectSealed]) -> None:
    producer = EventProducer(bootstrap, client_id="test-codec")
    await producer.start()
    try:
        for event in events:
            await producer.publish(OBJECT_SEALED, event.object.study_instance_uid, event)
    finally:
        await producer.stop()


async def test_sealed_objects_upload_and_survive_kill9_mid_upload(
    tmp_path: Path, kafka_bootstrap: str, unique_group: str, tusd: Tusd, outgoing: Outgoing
) -> None:
    await _group_at_end(kafka_bootstrap, unique_group)
    small = [outgoing.sealed(50_000) for _ in range(2)]
    big = outgoing.sealed(1_200_000)
    with ReceiptsPeer() as receipts:
        uplink = Uplink(
            tmp_path,
            kafka_bootstrap,
            tusd.url,
            receipts.url,
            unique_group,
            TRAILERLINK_BANDWIDTH_CAP_BYTES_PER_SECOND="300000",
        )
        with uplink.proc:
            uplink.proc.wait_ready(uplink.url("/readyz"), timeout=90)
            await _publish(
                kafka_bootstrap, [sealed_event(o, uplink.trailer_id) for o in [*small, big]]
            )

            def big_upload() -> dict | None:
                for up in tusd.uploads():
                    if up["MetaData"]["sop_instance_uid"] == big.sop_instance_uid:
                        return up
                return None

            async def big_partly() -> bool:
                up = big_upload()
                return up is not None and 200_000 < tusd.offset(up["ID"]) < 900_000

            await async_wait_until(big_partly, 60, "big object part-way up")
            uplink.proc.kill9()
            first = big_upload()
            assert first is not None
            uplink.proc.start()
            uplink.proc.wait_ready(uplink.url("/readyz"), timeout=90)

            async def all_uploaded() -> bool:
                return uplink.states().get("uploaded", 0) == 3

            await async_wait_until(all_uploaded, 60, "all three uploaded after kill -9")
            ups = tusd.uploads()
            assert len(ups) == 3, "kill -9 must resume the same upload, not start another"
            for obj in [*small, big]:
                (up,) = [
                    u for u in ups if u["MetaData"]["sop_instance_uid"] == obj.sop_instance_uid
                ]
                assert tusd.data(up["ID"]) == outgoing.read(obj)
            assert big_upload()["ID"] == first["ID"]

            # The ingest reports: two delivered, one failed for good.
            receipts.add(
                "delivered",
                small[0].sop_instance_uid,
                small[0].study_instance_uid,
                small[0].dataset_sha256,
            )
            receipts.add(
                "delivered", big.sop_instance_uid, big.study_instance_uid, big.dataset_sha256
            )
            receipts.add(
                "failed",
                small[1].sop_instance_uid,
                small[1].study_instance_uid,
                small[1].dataset_sha256,
                reason_code="FAILURE_REASON_PACS_REFUSED",
                reason="PACS refused the object",
                stage="ingest.pacs",
                dicom_status=0xA700,
                permanent=True,
            )

            mine = {o.sop_instance_uid for o in [*small, big]}
            delivered = await read_events(
                kafka_bootstrap,
                OBJECT_DELIVERED,
                lambda seen: len(seen) >= 2,
                match=lambda d: d.event.object.sop_instance_uid in mine,
                timeout=30,
            )
            assert {d.event.object.sop_instance_uid for d in delivered} == {
                small[0].sop_instance_uid,
                big.sop_instance_uid,
            }
            assert all(isinstance(d.event, ObjectDelivered) for d in delivered)
            assert all(d.key == d.event.object.study_instance_uid for d in delivered)
            upload_ids = {str(r["sop_instance_uid"]): r["upload_id"] for r in receipts.receipts}
            assert all(
                d.event.upload_id == upload_ids[d.event.object.sop_instance_uid] for d in delivered
            )
            failed = await read_events(
                kafka_bootstrap,
                OBJECT_FAILED,
                lambda seen: len(seen) >= 1,
                match=lambda d: d.event.object.sop_instance_uid == small[1].sop_instance_uid,
                timeout=30,
            )
            assert isinstance(failed[0].event, ObjectFailed)
            assert failed[0].event.stage == "ingest.pacs" and failed[0].event.permanent
            assert failed[0].event.upload_id == upload_ids[small[1].sop_instance_uid]

            async def recorded() -> bool:
                return uplink.states() == {"delivered": 2, "failed": 1}

            await async_wait_until(recorded, 20, "receipts recorded in the queue")
            metrics = http_get(uplink.url("/metrics"))
            for name in (
                "trailerlink_uplink_backlog_objects",
                "trailerlink_uplink_goodput_bytes",
                "trailerlink_uplink_link_state",
                "trailerlink_uplink_receipts_lag",
            ):
                assert name in metrics
            log = (tmp_path / "uplink.log").read_text()
            for obj in [*small, big]:
                assert obj.sop_instance_uid not in log  # UIDs are not patient data, but
                # the log stays free of object identity beyond row ids anyway
        await asyncio.sleep(0)
