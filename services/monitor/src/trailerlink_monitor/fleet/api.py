"""Fleet mode's HTTP API for support: trailers, completeness (missing and pending images
by trailer and study), an image's journey, and the receiving end of the trailers' event
relay. Answers carry UIDs, ids and times only."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from trailerlink_common.sqlstore import DatabaseUnavailable
from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import (
    Heartbeat,
    LinkState,
    ObjectReceived,
    ProcedureStepUpdated,
)

from trailerlink_monitor import metrics
from trailerlink_monitor.fleet.handler import FleetMonitor
from trailerlink_monitor.fleet.store import JourneyStep, not_yet_sent, now

# Trailer topic -> (central topic, message): what a trailer may relay through the monitor.
Relayed = Heartbeat | ProcedureStepUpdated | ObjectReceived
# Trailer topic -> (central topic, event type).
RELAYED: dict[str, tuple[str, type[Relayed]]] = {
    topics.HEARTBEAT: (topics.CENTRAL_HEARTBEAT, Heartbeat),
    topics.PROCEDURE_STEP: (topics.CENTRAL_PROCEDURE_STEP, ProcedureStepUpdated),
    topics.OBJECT_RECEIVED: (topics.CENTRAL_OBJECT_RECEIVED, ObjectReceived),
}
TOPIC_HEADER = "X-Trailerlink-Topic"
tracer = trace.get_tracer("trailerlink.monitor")


def central_key(topic_name: str, event: Relayed) -> str:
    if isinstance(event, ProcedureStepUpdated):
        return f"{event.meta.trailer_id}/{event.study_instance_uid}"
    if isinstance(event, ObjectReceived):
        return f"{event.meta.trailer_id}/{event.object.study_instance_uid}"
    return event.meta.trailer_id


def journey_document(steps: list[JourneyStep]) -> list[dict[str, object]]:
    """The stored steps and, for each image still on the trailer, its ``on_trailer`` step
    as of now (with ``age_seconds``)."""
    return [asdict(s) for s in steps + not_yet_sent(steps, now())]


def add_fleet_routes(
    app: FastAPI, fleet: FleetMonitor, producer: EventProducer, trailer_header: str = ""
) -> None:
    """Mount ``/v1/...`` on ``app``."""
    router = APIRouter(prefix="/v1")

    @router.get("/trailers")
    async def trailers() -> dict[str, object]:
        stored = await asyncio.to_thread(fleet.store.heartbeats)
        current = now()
        out = []
        for trailer in sorted(fleet.expected | set(stored)):
            entry: dict[str, object] = {
                "trailer_id": trailer,
                "expected": trailer in fleet.expected,
            }
            if trailer in stored:
                sent_at, raw = stored[trailer]
                hb = Heartbeat.FromString(raw)
                entry.update(
                    last_heartbeat_at=sent_at,
                    heartbeat_age_seconds=round(current - sent_at, 1),
                    sequence=hb.sequence,
                    backlog_objects=hb.backlog_objects,
                    backlog_bytes=hb.backlog_bytes,
                    oldest_unsent_age_seconds=hb.oldest_unsent_age_seconds,
                    disk_free_bytes=hb.disk_free_bytes,
                    disk_total_bytes=hb.disk_total_bytes,
                    link_goodput_bytes_per_second=hb.link_goodput_bytes_per_second,
                    link_state=LinkState.Name(hb.link_state).removeprefix("LINK_STATE_").lower(),
                    worklist_cache_age_seconds=hb.worklist_cache_age_seconds,
                    canary_ok=hb.canary_ok,
                    versions=dict(hb.versions),
                    dead_letters=hb.dead_letters,
                    failed_objects=hb.failed_objects,
                    uplink_paused=hb.uplink_paused,
                    uplink_operator_cap_bytes_per_second=(hb.uplink_operator_cap_bytes_per_second),
                    uplink_cap_bytes_per_second=hb.uplink_cap_bytes_per_second,
                )
            out.append(entry)
        return {"trailers": out}

    @router.get("/completeness")
    async def completeness(trailer_id: str = "", limit: int = 1000) -> dict[str, object]:
        """Per trailer: images listed as taken and not in PACS, past (missing) and within
        (pending) the deadline; per study: the same, and where those images are."""
        current = now()
        counts = await asyncio.to_thread(fleet.store.completeness, current)
        studies = await asyncio.to_thread(
            fleet.store.studies_incomplete, current, trailer_id or None, max(1, limit)
        )
        names = sorted(
            set(counts.missing) | set(counts.pending) | ({trailer_id} if trailer_id else set())
        )
        return {
            "deadline_seconds": fleet.deadline_seconds,
            "trailers": [
                {
                    "trailer_id": t,
                    "missing": counts.missing.get(t, 0),
                    "pending": counts.pending.get(t, 0),
                }
                for t in names
                if not trailer_id or t == trailer_id
            ],
            "studies": [asdict(s) for s in studies],
        }

    @router.get("/completeness/missing")
    async def missing(trailer_id: str = "", limit: int = 1000) -> dict[str, object]:
        rows = await asyncio.to_thread(fleet.store.missing, now(), trailer_id or None, limit)
        return {"missing": [asdict(r) for r in rows]}

    @router.get("/audit/instances/{sop_uid}")
    async def instance_journey(sop_uid: str) -> dict[str, object]:
        steps = await asyncio.to_thread(fleet.store.journey, sop_uid=sop_uid)
        if not steps:
            raise HTTPException(404, "no event names this SOP Instance UID")
        return {"sop_instance_uid": sop_uid, "journey": journey_document(steps)}

    @router.get("/audit/studies/{study_uid}")
    async def study_journey(study_uid: str) -> dict[str, object]:
        steps = await asyncio.to_thread(fleet.store.journey, study_uid=study_uid)
        if not steps:
            raise HTTPException(404, "no event names this Study Instance UID")
        return {"study_instance_uid": study_uid, "journey": journey_document(steps)}

    @router.post("/events", status_code=204)
    async def relay(request: Request) -> None:
        """Accept one event a trailer's agent relays; 204 once it is in central Kafka."""
        name = request.headers.get(TOPIC_HEADER, "")
        if name not in RELAYED:
            raise HTTPException(400, f"{TOPIC_HEADER} must name one of {sorted(RELAYED)}")
        central, message = RELAYED[name]
        try:
            event = message.FromString(await request.body())
        except DecodeError:
            raise HTTPException(400, "body is not a serialized event") from None
        trailer = event.meta.trailer_id
        if not trailer:
            raise HTTPException(400, "event has no meta.trailer_id")
        if trailer_header and request.headers.get(trailer_header, "") != trailer:
            raise HTTPException(403, "event is not from the authenticated trailer")
        if fleet.expected and trailer not in fleet.expected:
            raise HTTPException(403, "trailer is not in the fleet list")
        # Continue the trailer's trace: the central record carries the same trace id.
        parent = propagate.extract(dict(request.headers))
        with tracer.start_as_current_span(
            "monitor.relay.receive", context=parent, kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("trailerlink.trailer_id", trailer)
            await producer.publish(central, central_key(central, event), event)
        metrics.RELAY_RECEIVED.labels(central).inc()

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Fleet state unavailable",
                "status": 503,
                "detail": str(exc),
            },
            status_code=503,
            media_type="application/problem+json",
        )

    app.include_router(router)
