"""Fleet mode's Kafka handler: each central event becomes state, numbers and a journey
step. Heartbeat -> trailer gauges; MPPS COMPLETED -> images expected in PACS; a gateway
receipt (relayed by the trailer's agent) / upload completed / delivered / failed ->
journey, and delivered -> latency from the gateway's receipt to PACS."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from trailerlink_common.sqlstore import DatabaseUnavailable
from trailerlink_events import topics
from trailerlink_events.kafka import Delivery, DependencyUnavailable, PermanentError
from trailerlink_events.messages import (
    FailureReason,
    Heartbeat,
    LinkState,
    ObjectDelivered,
    ObjectFailed,
    ObjectReceived,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    UploadCompleted,
)

from trailerlink_monitor import metrics
from trailerlink_monitor.fleet.store import (
    IN_PACS,
    RECEIVED,
    UPLOADED,
    FleetStore,
    JourneyStep,
    now,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.monitor")

FLEET_TOPICS = (
    topics.CENTRAL_HEARTBEAT,
    topics.CENTRAL_PROCEDURE_STEP,
    topics.CENTRAL_UPLOAD_COMPLETED,
    topics.CENTRAL_OBJECT_DELIVERED,
    topics.CENTRAL_OBJECT_FAILED,
    topics.CENTRAL_OBJECT_RECEIVED,
)


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _received_step_id(trailer: str, sop_uid: str, received_at: Timestamp) -> str:
    """One ``received`` step per gateway receipt, whichever event brings it first: the
    relayed ``object-received`` or ``object-delivered`` (both carry the gateway's time, to
    the microsecond)."""
    micros = received_at.seconds * 1_000_000 + round(received_at.nanos / 1000)
    return f"received:{trailer}:{sop_uid}:{micros}"


def load_fleet(path: Path) -> list[str]:
    """Trailer ids from the fleet file (``trailers: [{id: ...}|"id", ...]``); [] if absent."""
    if not path.is_file():
        return []
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("trailers", []) if isinstance(raw, dict) else raw
    ids = []
    for entry in entries or []:
        ids.append(str(entry["id"] if isinstance(entry, dict) else entry))
    return ids


class FleetMonitor:
    """Turns central events into fleet state; :meth:`evaluate` refreshes the gauges."""

    def __init__(
        self,
        store: FleetStore,
        expected: list[str],
        deadline_seconds: float,
        retention_seconds: float = 60 * 86400.0,
    ) -> None:
        self.store = store
        self.expected = set(expected)
        self.deadline_seconds = deadline_seconds
        self.retention_seconds = retention_seconds
        self.started_at = now()
        self._labelled: set[str] = set()
        self._completeness_labelled: set[str] = set()
        self._versions: dict[str, set[tuple[str, str]]] = {}
        for trailer in self.expected:
            metrics.TRAILER_EXPECTED.labels(trailer).set(1)
            # 0 from the start: the first gap, failure or delivery is an increase().
            metrics.HEARTBEATS_MISSED.labels(trailer)
            metrics.DELIVERED.labels(trailer)

    # --- Kafka ---------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        try:
            await self._handle(delivery)
        except DatabaseUnavailable as exc:  # PostgreSQL down: retry, never dead-letter
            raise DependencyUnavailable(str(exc)) from None

    async def _handle(self, delivery: Delivery) -> None:
        event = delivery.event
        trailer = event.meta.trailer_id
        if not trailer:
            raise PermanentError("event without meta.trailer_id")
        with tracer.start_as_current_span("monitor.record") as span:
            span.set_attribute("trailerlink.trailer_id", trailer)
            if isinstance(event, Heartbeat):
                await asyncio.to_thread(self.on_heartbeat, event)
            elif isinstance(event, ProcedureStepUpdated):
                span.set_attribute("dicom.study_instance_uid", event.study_instance_uid)
                await asyncio.to_thread(self.on_procedure_step, event)
            elif isinstance(event, ObjectDelivered):
                span.set_attribute("dicom.sop_instance_uid", event.object.sop_instance_uid)
                await asyncio.to_thread(self.on_delivered, event)
            elif isinstance(event, ObjectFailed):
                span.set_attribute("dicom.sop_instance_uid", event.object.sop_instance_uid)
                await asyncio.to_thread(self.on_failed, event)
            elif isinstance(event, UploadCompleted):
                span.set_attribute("dicom.sop_instance_uid", event.object.sop_instance_uid)
                await asyncio.to_thread(self.on_upload_completed, event)
            elif isinstance(event, ObjectReceived):
                span.set_attribute("dicom.sop_instance_uid", event.object.sop_instance_uid)
                await asyncio.to_thread(self.on_received, event)
            else:
                raise PermanentError(f"unexpected event on {delivery.topic}")

    def on_heartbeat(self, hb: Heartbeat) -> None:
        trailer = hb.meta.trailer_id
        sent_at = _seconds(hb.meta.occurred_at)
        update = self.store.record_heartbeat(trailer, hb.sequence, sent_at, hb.SerializeToString())
        metrics.HEARTBEATS.labels(trailer).inc()
        if update.missed:
            metrics.HEARTBEATS_MISSED.labels(trailer).inc(update.missed)
        if update.newest:
            self._apply_heartbeat(hb, sent_at)

    def on_procedure_step(self, step: ProcedureStepUpdated) -> None:
        trailer = step.meta.trailer_id
        at = _seconds(step.ended_at) or _seconds(step.meta.occurred_at)
        self.store.add_step(
            step.meta.event_id + ":mpps",
            JourneyStep(
                "mpps."
                + ProcedureStepStatus.Name(step.status)
                .removeprefix("PROCEDURE_STEP_STATUS_")
                .lower(),
                step.meta.producer or "worklist",
                at,
                trailer,
                "",
                step.study_instance_uid,
                f"mpps={step.mpps_sop_instance_uid} images={len(step.performed_instances)}",
            ),
        )
        if step.status != ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED:
            return
        uids = [p.sop_instance_uid for p in step.performed_instances if p.sop_instance_uid]
        self.store.expect(
            trailer,
            step.study_instance_uid,
            step.mpps_sop_instance_uid,
            uids,
            at,
            self.deadline_seconds,
        )
        for p in step.performed_instances:
            self.store.add_step(
                f"{step.meta.event_id}:{p.sop_instance_uid}",
                JourneyStep(
                    "taken",
                    "modality (MPPS)",
                    at,
                    trailer,
                    p.sop_instance_uid,
                    step.study_instance_uid,
                    f"mpps={step.mpps_sop_instance_uid}",
                ),
            )

    def on_delivered(self, ev: ObjectDelivered) -> None:
        trailer = ev.meta.trailer_id
        obj = ev.object
        # The gateway's own receive time (carried from the uplink through the ingest);
        # unset from an uplink or ingest that did not carry it: then no step, no latency.
        received = _seconds(ev.received_at) if ev.HasField("received_at") else 0.0
        delivered = _seconds(ev.delivered_at) or _seconds(ev.meta.occurred_at)
        eid = ev.meta.event_id
        if received:
            self._add_received(
                trailer, obj.sop_instance_uid, obj.study_instance_uid, ev.received_at
            )
        self.store.add_step(
            eid + ":pacs",
            JourneyStep(
                IN_PACS,
                ev.meta.producer or "ingest",
                delivered,
                trailer,
                obj.sop_instance_uid,
                obj.study_instance_uid,
                f"pacs={ev.pacs_ae_title} committed={ev.storage_committed} "
                f"duplicate={ev.duplicate}",
            ),
        )
        first = self.store.mark_delivered(trailer, obj.sop_instance_uid, delivered)
        if first and not ev.duplicate:
            metrics.DELIVERED.labels(trailer).inc()
            if received and delivered >= received:
                metrics.ACQUISITION_TO_PACS.observe(delivered - received)

    def on_failed(self, ev: ObjectFailed) -> None:
        trailer = ev.meta.trailer_id
        at = _seconds(ev.failed_at) or _seconds(ev.meta.occurred_at)
        stage = ev.stage or "unknown"
        self.store.add_step(
            ev.meta.event_id,
            JourneyStep(
                "failed",
                stage,
                at,
                trailer,
                ev.object.sop_instance_uid,
                ev.object.study_instance_uid,
                f"{FailureReason.Name(ev.reason_code)} permanent={ev.permanent}",
            ),
        )
        metrics.FAILED.labels(trailer, stage, str(ev.permanent).lower()).inc()

    def on_received(self, ev: ObjectReceived) -> None:
        """A gateway receipt the trailer's agent relayed: the image exists, on the trailer,
        from the gateway's time on (until an upload or delivery says otherwise)."""
        if not ev.HasField("received_at"):
            raise PermanentError("object-received without received_at")
        self._add_received(
            ev.meta.trailer_id,
            ev.object.sop_instance_uid,
            ev.object.study_instance_uid,
            ev.received_at,
        )

    def _add_received(
        self, trailer: str, sop_uid: str, study_uid: str, received_at: Timestamp
    ) -> None:
        self.store.add_step(
            _received_step_id(trailer, sop_uid, received_at),
            JourneyStep(
                RECEIVED, "gateway", _seconds(received_at), trailer, sop_uid, study_uid, ""
            ),
        )

    def on_upload_completed(self, ev: UploadCompleted) -> None:
        self.store.add_step(
            ev.meta.event_id,
            JourneyStep(
                UPLOADED,
                ev.meta.producer or "ingest",
                _seconds(ev.completed_at) or _seconds(ev.meta.occurred_at),
                ev.meta.trailer_id,
                ev.object.sop_instance_uid,
                ev.object.study_instance_uid,
                f"upload={ev.upload_id}",
            ),
        )

    # --- gauges ----------------------------------------------------------------------
    def _apply_heartbeat(self, hb: Heartbeat, sent_at: float) -> None:
        t = hb.meta.trailer_id
        self._labelled.add(t)
        metrics.LAST_HEARTBEAT.labels(t).set(sent_at)
        metrics.BACKLOG_OBJECTS.labels(t).set(hb.backlog_objects)
        metrics.BACKLOG_BYTES.labels(t).set(hb.backlog_bytes)
        metrics.OLDEST_UNSENT.labels(t).set(hb.oldest_unsent_age_seconds)
        metrics.DISK_FREE.labels(t).set(hb.disk_free_bytes)
        metrics.DISK_TOTAL.labels(t).set(hb.disk_total_bytes)
        metrics.LINK_UP.labels(t).set(
            1 if hb.link_state in (LinkState.LINK_STATE_UP, LinkState.LINK_STATE_DEGRADED) else 0
        )
        metrics.LINK_STATE.labels(t).set(int(hb.link_state))
        metrics.LINK_GOODPUT.labels(t).set(hb.link_goodput_bytes_per_second)
        metrics.UPLINK_PAUSED.labels(t).set(1 if hb.uplink_paused else 0)
        metrics.UPLINK_OPERATOR_CAP.labels(t).set(hb.uplink_operator_cap_bytes_per_second)
        metrics.UPLINK_CAP.labels(t).set(hb.uplink_cap_bytes_per_second)
        metrics.WORKLIST_AGE.labels(t).set(hb.worklist_cache_age_seconds)
        metrics.DEAD_LETTERS.labels(t).set(hb.dead_letters)
        metrics.FAILED_OBJECTS.labels(t).set(hb.failed_objects)
        if hb.HasField("canary_at"):
            metrics.CANARY_OK.labels(t).set(1 if hb.canary_ok else 0)
            metrics.CANARY_SECONDS.labels(t).set(hb.canary_seconds)
            metrics.CANARY_AT.labels(t).set(_seconds(hb.canary_at))
        if hb.HasField("client_certificate_not_after"):
            metrics.CERTIFICATE_NOT_AFTER.labels(t).set(_seconds(hb.client_certificate_not_after))
        versions = set(hb.versions.items())
        for component, version in self._versions.get(t, set()) - versions:
            metrics.VERSION_INFO.remove(t, component, version)
        for component, version in versions:
            metrics.VERSION_INFO.labels(t, component, version).set(1)
        self._versions[t] = versions

    def evaluate(self) -> None:
        """Recompute age and completeness gauges (call periodically and at start)."""
        current = now()
        stored = self.store.heartbeats()
        for trailer, (sent_at, raw) in stored.items():
            if trailer not in self._labelled:
                self._apply_heartbeat(Heartbeat.FromString(raw), sent_at)
            metrics.HEARTBEAT_AGE.labels(trailer).set(max(0.0, current - sent_at))
        for trailer in self.expected - set(stored):
            # Never heard from: count its silence from the monitor's start.
            metrics.LAST_HEARTBEAT.labels(trailer).set(self.started_at)
            metrics.HEARTBEAT_AGE.labels(trailer).set(current - self.started_at)
        counts = self.store.completeness(current)
        self._completeness_labelled |= (
            self.expected | set(stored) | set(counts.missing) | set(counts.pending)
        )
        for trailer in self._completeness_labelled:
            metrics.COMPLETENESS_MISSING.labels(trailer).set(counts.missing.get(trailer, 0))
            metrics.COMPLETENESS_PENDING.labels(trailer).set(counts.pending.get(trailer, 0))
        metrics.EVALUATED_AT.set(current)

    def purge(self) -> None:
        self.store.purge(now() - self.retention_seconds)
