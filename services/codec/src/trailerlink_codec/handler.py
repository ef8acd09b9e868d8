"""The codec's hop: ObjectReceived in, seal, ObjectSealed out.

Reads like the sentence: decode the event, seal the spool object it names (in a worker
thread), publish where the sealed object is. The Kafka plumbing (retries, commits after
the handler returns, dead letters) is ``trailerlink_events.kafka.ConsumerRunner``'s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import Executor

from opentelemetry import trace
from trailerlink_events.kafka import (
    Delivery,
    DependencyUnavailable,
    EventProducer,
    PermanentError,
)
from trailerlink_events.messages import (
    FailureReason,
    ObjectFailed,
    ObjectReceived,
    ObjectSealed,
    new_meta,
    timestamp,
)
from trailerlink_events.topics import OBJECT_FAILED, OBJECT_SEALED

from trailerlink_codec import metrics
from trailerlink_codec.sealer import (
    BadJob,
    Sealed,
    Sealer,
    SealJob,
    SourceCorrupt,
    SpoolKeyMissing,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.codec")
_EVENT_IDS = uuid.UUID("6f1d7c2e-4f4a-4f59-9a53-2c6a1b0d7e11")


class CodecHandler:
    """Kafka handler of ``object-received``."""

    def __init__(
        self, sealer: Sealer, producer: EventProducer, trailer_id: str, executor: Executor
    ) -> None:
        self.sealer = sealer
        self.producer = producer
        self.trailer_id = trailer_id
        self.executor = executor

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, ObjectReceived)
        job = self._job(event)
        uid = event.object.sop_instance_uid
        metrics.IN_FLIGHT.inc()
        span = tracer.start_span(
            "codec.seal",
            attributes={"dicom.sop_instance_uid": uid, "trailerlink.original_bytes": job.file_size},
        )
        try:
            sealed = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.sealer.seal, job
            )
            span.set_attributes(
                {
                    "trailerlink.codec": sealed.codec,
                    "trailerlink.sealed_bytes": sealed.sealed_size,
                    "trailerlink.reused": sealed.reused,
                }
            )
        except (BadJob, SourceCorrupt) as exc:
            metrics.OBJECTS.labels("failed", "").inc()
            reason = f"{type(exc).__name__}: {exc}"
            log.error("object cannot be sealed", extra={"sop_instance_uid": uid, "reason": reason})
            await self._publish_failed(delivery, event, reason, isinstance(exc, SourceCorrupt))
            raise PermanentError(reason) from None
        except SpoolKeyMissing as exc:
            log.error("spool key not loaded; will retry", extra={"sop_instance_uid": uid})
            raise DependencyUnavailable(str(exc)) from None
        except OSError as exc:
            raise DependencyUnavailable(f"disk: {type(exc).__name__}") from None
        finally:
            metrics.IN_FLIGHT.dec()
            span.end()
        self._count(sealed)
        log.info(
            "object sealed",
            extra={
                "sop_instance_uid": uid,
                "codec": sealed.codec,
                "key_id": sealed.key_id,
                "original_bytes": sealed.original_size,
                "sealed_bytes": sealed.sealed_size,
                "ratio": round(sealed.ratio, 3),
                "seconds": round(sealed.seconds, 3),
                "reused": sealed.reused,
                "fallback": sealed.fallback_kind,
            },
        )
        await self.producer.publish(
            OBJECT_SEALED,
            delivery.key or event.object.study_instance_uid,
            self._sealed_event(event, sealed),
        )

    def _job(self, event: ObjectReceived) -> SealJob:
        if event.meta.trailer_id and event.meta.trailer_id != self.trailer_id:
            raise PermanentError(
                f"event is for trailer {event.meta.trailer_id!r}, this is {self.trailer_id!r}"
            )
        if not event.object.sop_instance_uid or not event.spool_path:
            raise PermanentError("event lacks the SOP Instance UID or the spool path")
        return SealJob(
            spool_path=event.spool_path,
            file_size=event.file_size_bytes,
            file_sha256=event.file_sha256,
            dataset_sha256=event.dataset_sha256,
            sop_instance_uid=event.object.sop_instance_uid,
        )

    def _count(self, sealed: Sealed) -> None:
        if sealed.reused:
            metrics.OBJECTS.labels("reused", sealed.codec).inc()
            return
        metrics.OBJECTS.labels("sealed", sealed.codec).inc()
        metrics.BYTES_IN.inc(sealed.original_size)
        metrics.BYTES_OUT.inc(sealed.sealed_size)
        metrics.RATIO.labels(sealed.codec).observe(sealed.ratio)
        metrics.SEAL_SECONDS.observe(sealed.seconds)
        if sealed.original_size:
            metrics.SECONDS_PER_MB.observe(sealed.seconds / (sealed.original_size / 1e6))
        if sealed.fallback_kind:
            metrics.FALLBACKS.labels(sealed.fallback_kind).inc()

    def _sealed_event(self, event: ObjectReceived, sealed: Sealed) -> ObjectSealed:
        # The same sealed bytes always get the same event id: a re-publish after a
        # crash or a redelivery is recognisably the same event.
        event_id = str(uuid.uuid5(_EVENT_IDS, f"{sealed.sealed_path}:{sealed.sealed_sha256}"))
        sealed_at = timestamp()
        if sealed.sealed_at_ms:
            sealed_at.FromMilliseconds(sealed.sealed_at_ms)
        out = ObjectSealed(
            meta=new_meta("codec", self.trailer_id, event_id),
            file_size_bytes=event.file_size_bytes,
            file_sha256=event.file_sha256,
            dataset_size_bytes=event.dataset_size_bytes,
            dataset_sha256=event.dataset_sha256,
            sealed_path=sealed.sealed_path,
            sealed_size_bytes=sealed.sealed_size,
            sealed_sha256=sealed.sealed_sha256,
            codec=sealed.codec,
            compression_ratio=sealed.ratio,
            key_id=sealed.key_id,
            sealed_at=sealed_at,
            priority=event.priority,
        )
        out.object.CopyFrom(event.object)
        if event.HasField("received_at"):
            out.received_at.CopyFrom(event.received_at)
        return out

    async def _publish_failed(
        self, delivery: Delivery, event: ObjectReceived, reason: str, corrupt: bool
    ) -> None:
        failed = ObjectFailed(
            meta=new_meta("codec", self.trailer_id),
            dataset_sha256=event.dataset_sha256,
            reason_code=(
                FailureReason.FAILURE_REASON_VERIFY_FAILED
                if corrupt
                else FailureReason.FAILURE_REASON_UNSPECIFIED
            ),
            reason=reason[:500],
            stage="codec.seal",
            permanent=True,
            failed_at=timestamp(),
        )
        failed.object.CopyFrom(event.object)
        await self.producer.publish(
            OBJECT_FAILED, delivery.key or event.object.study_instance_uid, failed
        )
