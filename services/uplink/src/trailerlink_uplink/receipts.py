"""Receipts: what became of uploaded objects, from the ingest, onto the trailer broker.

Polls ``GET <receipts_url>?after=<cursor>`` (mutual TLS: the ingest knows the trailer by
its certificate). The answer is JSON::

    {"receipts": [{"cursor": "17", "upload_id": "...", "outcome": "delivered" | "failed",
                   "sop_instance_uid": "...", "study_instance_uid": "...",
                   "dataset_sha256": "...", "stored_transfer_syntax_uid": "...",
                   "storage_committed": true, "duplicate": false,
                   "reason_code": "FAILURE_REASON_VERIFY_FAILED", "reason": "...",
                   "stage": "...", "dicom_status": 0, "permanent": true,
                   "at": 1764300000.0}],
     "next_cursor": "17", "more": false}

(:class:`trailerlink_events.wire.Receipt`, read leniently; ``at`` is when the outcome
happened, epoch seconds).

Each receipt is published (ObjectDelivered / ObjectFailed, with an event id derived
from the receipt so a replay repeats the same id) and recorded in the queue *before*
the cursor moves on, so a crash repeats receipts rather than losing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import httpx
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_common.tracing import attached
from trailerlink_events.messages import (
    FailureReason,
    ObjectDelivered,
    ObjectFailed,
    ObjectIdentity,
    new_meta,
    timestamp,
)
from trailerlink_events.topics import OBJECT_DELIVERED, OBJECT_FAILED
from trailerlink_events.wire import Receipt, decode_receipts_page

from trailerlink_uplink import metrics
from trailerlink_uplink.link import LinkError, classify, http_error
from trailerlink_uplink.queue import STATE_DELIVERED, QueuedObject, SendQueue

log = logging.getLogger(__name__)

CURSOR_KEY = "receipts_cursor"
MAX_RESENDS_AFTER_CORRUPTION = 3
_NAMESPACE = uuid.UUID("6f1d7c52-3a8e-4d0b-9d55-1f2a0c6b7e11")


class Publisher:
    """What the poller needs from Kafka (EventProducer fits)."""

    async def publish(self, topic_name: str, key: str, event: Any) -> None: ...  # pragma: no cover


def _when(text: object) -> datetime | None:
    if isinstance(text, int | float) and not isinstance(text, bool) and text > 0:
        return datetime.fromtimestamp(float(text), UTC)
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def object_identity(row: QueuedObject) -> ObjectIdentity:
    """The identity a queued object's events carry (delivered, failed), from its row."""
    return ObjectIdentity(
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
    )


def _reason_code(value: object) -> FailureReason:
    if isinstance(value, int):
        # protoc's stubs type an enum's values as its class; at run time they are ints.
        return cast("FailureReason", value)
    name = str(value or "").upper()
    if not name.startswith("FAILURE_REASON_"):
        name = "FAILURE_REASON_" + name
    try:
        return FailureReason.Value(name)
    except ValueError:
        return FailureReason.Value("FAILURE_REASON_UNSPECIFIED")


class ReceiptPoller:
    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        queue: SendQueue,
        producer: Any,
        trailer_id: str,
        poll_seconds: float,
    ) -> None:
        self.http = http
        self.url = url
        self.queue = queue
        self.producer = producer
        self.trailer_id = trailer_id
        self.poll_seconds = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Service task: poll until ``stop``; failures are logged by kind and retried."""
        while not stop.is_set():
            try:
                while await self.poll_once() and not stop.is_set():
                    pass
            except LinkError as exc:
                log.info("receipts not reachable", extra={"kind": exc.kind})
            except Exception as exc:
                log.warning("receipts poll failed; will retry", extra={"error": type(exc).__name__})
            self._update_lag()
            await sleep_or_stop(stop, self.poll_seconds)

    def _update_lag(self) -> None:
        oldest = self.queue.oldest_awaiting_receipt()
        metrics.RECEIPTS_LAG.set(time.time() - oldest if oldest else 0)

    async def poll_once(self) -> bool:
        """Fetch and handle one page; True if it had receipts (there may be more)."""
        cursor = self.queue.get_value(CURSOR_KEY) or ""
        try:
            rsp = await self.http.get(self.url, params={"after": cursor} if cursor else None)
        except (httpx.HTTPError, OSError) as exc:
            raise classify(exc) from None
        if rsp.status_code != 200:
            raise http_error(rsp.status_code)
        page = decode_receipts_page(rsp.json())
        metrics.RECEIPTS_LAST_POLL.set(time.time())
        for receipt in page.receipts:
            await self.handle(receipt)
        next_cursor = page.cursor_after()
        if next_cursor is not None and next_cursor != cursor:
            self.queue.set_value(CURSOR_KEY, next_cursor)
        return bool(page.receipts) and page.more

    async def _publish(self, row: QueuedObject, topic_name: str, key: str, event: Any) -> None:
        """Publish an object's outcome in its image's trace (the poll itself has none)."""
        with attached(row.traceparent):
            await self.producer.publish(topic_name, key, event)

    async def handle(self, raw: Mapping[str, Any]) -> None:
        receipt = Receipt.from_json(raw)
        sop = receipt.sop_instance_uid
        sha = receipt.dataset_sha256
        rows = self.queue.find_sent(sop, sha)
        if not rows:
            metrics.RECEIPTS.labels("unknown").inc()
            log.warning(
                "receipt for an object this trailer did not queue",
                extra={"cursor": raw.get("cursor")},
            )
            return
        row = rows[-1]
        status = receipt.outcome
        event_id = str(uuid.uuid5(_NAMESPACE, f"{status}:{sop}:{sha}:{receipt.cursor}"))
        upload_id = receipt.upload_id  # lets support correlate the hops
        if status == "delivered":
            delivered_at = _when(receipt.at)
            event = ObjectDelivered(
                meta=new_meta("uplink", self.trailer_id, event_id=event_id),
                object=object_identity(row),
                dataset_sha256=sha,
                pacs_ae_title=receipt.pacs_ae_title,
                stored_transfer_syntax_uid=(
                    receipt.stored_transfer_syntax_uid or row.transfer_syntax_uid
                ),
                storage_committed=receipt.storage_committed,
                received_at=timestamp(datetime.fromtimestamp(row.received_at, UTC)),
                delivered_at=timestamp(delivered_at),
                duplicate=receipt.duplicate or row.state == STATE_DELIVERED,
                upload_id=upload_id,
            )
            await self._publish(row, OBJECT_DELIVERED, row.study_instance_uid, event)
            for r in rows:
                self.queue.mark_delivered(r.id, delivered_at.timestamp() if delivered_at else None)
            metrics.RECEIPTS.labels("delivered").inc()
            return
        if status != "failed":
            metrics.RECEIPTS.labels("unknown").inc()
            return
        code = _reason_code(receipt.reason_code)
        permanent = receipt.permanent
        event = ObjectFailed(
            meta=new_meta("uplink", self.trailer_id, event_id=event_id),
            object=object_identity(row),
            dataset_sha256=sha,
            reason_code=code,
            reason=receipt.reason[:500],
            stage=receipt.stage or "ingest",
            dicom_status=receipt.dicom_status,
            permanent=permanent,
            failed_at=timestamp(_when(receipt.at)),
            upload_id=upload_id,
        )
        await self._publish(row, OBJECT_FAILED, row.study_instance_uid, event)
        metrics.RECEIPTS.labels("failed").inc()
        if row.state == STATE_DELIVERED or not permanent:
            return  # the ingest retries a transient failure itself
        reason = FailureReason.Name(code)
        if (
            code == FailureReason.Value("FAILURE_REASON_VERIFY_FAILED")
            and row.attempts < MAX_RESENDS_AFTER_CORRUPTION
        ):
            self.queue.requeue(row.id, reason)  # bytes damaged on the way: send afresh
        else:
            self.queue.mark_failed(row.id, reason)
