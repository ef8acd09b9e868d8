"""Announce completed uploads on central Kafka so any replica processes them, and the
sweeper that makes sure every completed upload is announced and expired ones go."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError
from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import ObjectIdentity, UploadCompleted, new_meta, timestamp

from trailerlink_ingest.identity import AccessListFile
from trailerlink_ingest.uploads import UploadInfo, UploadStore

log = logging.getLogger(__name__)


def completed_event(info: UploadInfo, storage_path: str) -> UploadCompleted:
    """The ``upload-completed`` event of a complete upload (deterministic event id)."""
    ident = info.identity
    from datetime import UTC, datetime

    completed = datetime.fromtimestamp(info.completed_at or info.updated_at, UTC)
    return UploadCompleted(
        meta=new_meta("ingest", info.trailer_id, event_id=f"{info.upload_id}-completed"),
        upload_id=info.upload_id,
        object=ObjectIdentity(
            study_instance_uid=ident.study_instance_uid,
            series_instance_uid=ident.series_instance_uid,
            sop_instance_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            transfer_syntax_uid=ident.transfer_syntax_uid),
        dataset_sha256=ident.dataset_sha256,
        file_sha256=ident.file_sha256,
        sealed_size_bytes=info.length,
        key_id=ident.key_id,
        storage_path=storage_path,
        completed_at=timestamp(completed),
    )


class Announcer:
    """Publishes ``upload-completed`` and records that it did (in the upload's state)."""

    def __init__(self, store: UploadStore, producer: EventProducer) -> None:
        self.store = store
        self.producer = producer

    async def announce(self, info: UploadInfo) -> bool:
        """True once published and recorded; False (logged) if Kafka is not reachable —
        the sweeper tries again. The bytes are durable either way."""
        if not self.producer.connected:
            return False
        path = self.store.relative(self.store.data_path(info.trailer_id, info.upload_id))
        event = completed_event(info, path)
        key = f"{info.trailer_id}/{info.identity.study_instance_uid}"
        try:
            await self.producer.publish(topics.CENTRAL_UPLOAD_COMPLETED, key, event)
        except (KafkaError, OSError) as exc:
            log.warning("upload complete but not announced yet; will retry",
                        extra={"upload_id": info.upload_id, "error": type(exc).__name__})
            return False
        await asyncio.to_thread(self.store.mark_announced, info)
        return True


class Sweeper:
    """Periodic housekeeping: announce what was not, expire what was abandoned."""

    def __init__(self, store: UploadStore, announcer: Announcer, access: AccessListFile,
                 expiry_seconds: float, interval_seconds: float = 5.0) -> None:
        self.store = store
        self.announcer = announcer
        self.access = access
        self.expiry_seconds = expiry_seconds
        self.interval_seconds = interval_seconds

    async def sweep_once(self) -> tuple[int, int]:
        """(announced, expired) counts of one pass."""
        await asyncio.to_thread(self.access.reload)
        uploads = await asyncio.to_thread(lambda: list(self.store.all_uploads()))
        announced = expired = 0
        now = time.time()
        for info in uploads:
            if info.complete and not info.announced:
                if await self.announcer.announce(info):
                    announced += 1
            elif info.expired(self.expiry_seconds, now):
                await asyncio.to_thread(self.store.delete, info.trailer_id, info.upload_id)
                expired += 1
        if announced or expired:
            log.info("sweep", extra={"announced": announced, "expired": expired})
        return announced, expired

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweep failed; next pass will retry")
            try:
                await asyncio.wait_for(stop.wait(), self.interval_seconds)
            except TimeoutError:
                pass
