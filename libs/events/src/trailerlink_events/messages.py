"""The generated event messages, plus helpers to build and name them.

Import messages from here, not from ``_generated``::

    from trailerlink_events.messages import ObjectReceived, new_meta
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

try:
    from trailerlink_events._generated import events_pb2
except ImportError as exc:  # pragma: no cover - only on a checkout without `make gen`
    raise ImportError("event contracts not generated: run `make gen`") from exc

EventMeta = events_pb2.EventMeta
ObjectIdentity = events_pb2.ObjectIdentity
ObjectReceived = events_pb2.ObjectReceived
ObjectSealed = events_pb2.ObjectSealed
UploadCompleted = events_pb2.UploadCompleted
ObjectDelivered = events_pb2.ObjectDelivered
ObjectFailed = events_pb2.ObjectFailed
WorklistChanged = events_pb2.WorklistChanged
ProcedureStepUpdated = events_pb2.ProcedureStepUpdated
PerformedInstance = events_pb2.PerformedInstance
DemographicsCorrection = events_pb2.DemographicsCorrection
Heartbeat = events_pb2.Heartbeat

Priority = events_pb2.Priority
FailureReason = events_pb2.FailureReason
WorklistChange = events_pb2.WorklistChange
WorklistSource = events_pb2.WorklistSource
ProcedureStepStatus = events_pb2.ProcedureStepStatus
LinkState = events_pb2.LinkState

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        ObjectReceived,
        ObjectSealed,
        UploadCompleted,
        ObjectDelivered,
        ObjectFailed,
        WorklistChanged,
        ProcedureStepUpdated,
        DemographicsCorrection,
        Heartbeat,
    )
}
"""Every top-level event by its full proto name (what the registry's ``message`` says)."""


def timestamp(when: datetime | None = None) -> Timestamp:
    """A protobuf Timestamp for ``when`` (default: now, UTC)."""
    ts = Timestamp()
    ts.FromDatetime(when or datetime.now(UTC))
    return ts


def new_meta(producer: str, trailer_id: str, event_id: str | None = None) -> EventMeta:
    """Event metadata with a fresh UUID (or ``event_id``, for deterministic re-emits)."""
    return EventMeta(
        event_id=event_id or str(uuid.uuid4()),
        trailer_id=trailer_id,
        occurred_at=timestamp(),
        producer=producer,
    )


def event_type_name(event: Message) -> str:
    """The full proto name of ``event``, e.g. ``trailerlink.events.v1.ObjectReceived``."""
    return event.DESCRIPTOR.full_name
