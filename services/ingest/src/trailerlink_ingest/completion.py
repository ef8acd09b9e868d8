"""Announce completed uploads on central Kafka so any replica processes them, and the
sweeper that makes sure every completed upload is announced and expired ones go."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_common.tracing import attached
from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import ObjectIdentity, UploadCompleted, new_meta, timestamp

from trailerlink_ingest import metrics
from trailerlink_ingest.identity import AccessListFile
from trailerlink_ingest.ledger import Ledger, LedgerUnavailable
from trailerlink_ingest.uploads import UploadInfo, UploadStore

log = logging.getLogger(__name__)

LEDGER_RECHECK_SECONDS = 300.0


def completed_event(
    info: UploadInfo, storage_path: str, received_at: float | None = None
) -> UploadCompleted:
    """The ``upload-completed`` event of a complete upload (deterministic event id);
    ``received_at``: the gateway's receive time the upload's creation stated."""
    ident = info.identity
    from datetime import UTC, datetime

    completed = datetime.fromtimestamp(info.completed_at or info.updated_at, UTC)
    event = UploadCompleted(
        meta=new_meta("ingest", info.trailer_id, event_id=f"{info.upload_id}-completed"),
        upload_id=info.upload_id,
        object=ObjectIdentity(
            study_instance_uid=ident.study_instance_uid,
            series_instance_uid=ident.series_instance_uid,
            sop_instance_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            transfer_syntax_uid=ident.transfer_syntax_uid,
        ),
        dataset_sha256=ident.dataset_sha256,
        file_sha256=ident.file_sha256,
        sealed_size_bytes=info.length,
        key_id=ident.key_id,
        storage_path=storage_path,
        completed_at=timestamp(completed),
    )
    if received_at is not None:
        event.received_at.CopyFrom(timestamp(datetime.fromtimestamp(received_at, UTC)))
    return event


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
        received_at = await asyncio.to_thread(self.store.received_at, info)
        event = completed_event(info, path, received_at)
        key = f"{info.trailer_id}/{info.identity.study_instance_uid}"
        traceparent = await asyncio.to_thread(self.store.traceparent, info)
        try:
            # In the image's trace: the processing and PACS spans the event leads to are
            # children of the trailer's upload, whichever replica announces it.
            with attached(traceparent):
                await self.producer.publish(topics.CENTRAL_UPLOAD_COMPLETED, key, event)
        except (KafkaError, OSError) as exc:
            log.warning(
                "upload complete but not announced yet; will retry",
                extra={"upload_id": info.upload_id, "error": type(exc).__name__},
            )
            return False
        await asyncio.to_thread(self.store.mark_announced, info)
        return True


class Sweeper:
    """Periodic housekeeping: announce what was not, and remove what nobody will finish
    or read again, so no trailer can fill the shared volume:

    * *abandoned*: unfinished and idle for ``expiry_seconds`` (a trailer that comes back
      later gets 404 and starts that object again: it keeps its copy until delivered);
    * *failed*: complete, with a ``failed`` receipt at least ``expiry_seconds`` old (a
      receipt is the upload's answer forever, so its bytes are never read again; a UID
      conflict's copy lives under ``conflicts/``, not here).

    An upload being written is never removed (see :meth:`UploadStore.reclaim`). Each
    removal is logged (trailer, upload id, reason, bytes; no patient data) and counted.
    """

    def __init__(
        self,
        store: UploadStore,
        announcer: Announcer,
        access: AccessListFile,
        expiry_seconds: float,
        interval_seconds: float = 5.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.announcer = announcer
        self.access = access
        self.expiry_seconds = expiry_seconds
        self.interval_seconds = interval_seconds
        self.ledger = ledger
        # Old complete uploads with no failed receipt (still in processing, delivered and
        # kept): asked about again only after this, not on every pass.
        self._next_ledger_check: dict[str, float] = {}

    async def sweep_once(self) -> tuple[int, int]:
        """(announced, expired) counts of one pass."""
        await asyncio.to_thread(self.access.reload)
        await asyncio.to_thread(self.store.remove_tombstones)
        uploads = await asyncio.to_thread(lambda: list(self.store.all_uploads()))
        self._next_ledger_check = {
            u.upload_id: self._next_ledger_check[u.upload_id]
            for u in uploads
            if u.upload_id in self._next_ledger_check
        }
        announced = expired = 0
        now = time.time()
        for info in uploads:
            if info.complete and not info.announced:
                if await self.announcer.announce(info):
                    announced += 1
            elif not info.complete:
                if info.expired(self.expiry_seconds, now):
                    expired += await self._reclaim(info, "abandoned", self._abandoned)
            elif await self._failed_long_ago(info, now):
                expired += await self._reclaim(info, "failed", lambda current: current.complete)
        if announced or expired:
            log.info("sweep", extra={"announced": announced, "expired": expired})
        return announced, expired

    def _abandoned(self, info: UploadInfo) -> bool:
        return info.expired(self.expiry_seconds)

    async def _failed_long_ago(self, info: UploadInfo, now: float) -> bool:
        if self.ledger is None or now <= info.updated_at + self.expiry_seconds:
            return False
        if self._next_ledger_check.get(info.upload_id, 0.0) > now:
            return False
        try:
            receipt = await asyncio.to_thread(self.ledger.receipt_for_upload, info.upload_id)
        except LedgerUnavailable:
            return False  # next pass
        if receipt is not None and receipt.outcome == "failed":
            if now > max(receipt.at, info.updated_at) + self.expiry_seconds:
                return True
        self._next_ledger_check[info.upload_id] = now + LEDGER_RECHECK_SECONDS
        return False

    async def _reclaim(
        self, info: UploadInfo, reason: str, still_due: Callable[[UploadInfo], bool]
    ) -> int:
        freed = await asyncio.to_thread(
            self.store.reclaim, info.trailer_id, info.upload_id, still_due
        )
        if freed is None:
            return 0
        metrics.EXPIRED_UPLOADS.labels(reason).inc()
        metrics.EXPIRED_BYTES.labels(reason).inc(freed)
        log.info(
            "upload expired; removed",
            extra={
                "trailer": info.trailer_id,
                "upload_id": info.upload_id,
                "reason": reason,
                "bytes": freed,
                "idle_seconds": round(time.time() - info.updated_at),
            },
        )
        return 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweep failed; next pass will retry")
            await sleep_or_stop(stop, self.interval_seconds)
