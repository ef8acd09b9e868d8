"""The uplink's admin API for `trailerlinkctl uplink` (pause, resume, cap) and
`trailerlinkctl resend` (a delivered study queued again from the spool; `--cancel` takes
it back while its objects still wait).

A study sealed for a key the data centre no longer holds (retired) is refused: the ingest
could never open it, and we chose not to re-seal the spool copy on the uplink (the uplink
holds no codec and no spool key; re-sending from the modality seals it afresh).

Needs the admin token (``trailerlink_common.admin``); every change is logged with the
operator's name; pause and caps are kept across restarts
(:mod:`trailerlink_uplink.control`), a resend is durable in the send queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from trailerlink_common.admin import admin_guard
from trailerlink_spool.index import STATUS_PURGED, SpoolEntry, SpoolIndex
from trailerlink_spool.layout import OutgoingLayout, SpoolLayout, is_valid_uid

from trailerlink_uplink.bandwidth import TokenBucket
from trailerlink_uplink.control import OperatorControl
from trailerlink_uplink.queue import QueuedObject, ResendRefused, SendQueue

log = logging.getLogger(__name__)


class PauseBody(BaseModel):
    until: float | None = Field(None, description="epoch seconds; null = until resumed")


class CapBody(BaseModel):
    bytes_per_second: int = Field(gt=0)
    until: float | None = None


def _future(until: float | None) -> float | None:
    if until is not None and until <= time.time():
        raise HTTPException(400, "until is in the past")
    return until


def add_admin_routes(
    app: FastAPI, control: OperatorControl, bucket: TokenBucket, token_file: Path | None
) -> None:
    """Mount ``/v1/admin/uplink...`` on ``app``."""
    router = APIRouter(prefix="/v1/admin/uplink")
    guard = Depends(admin_guard(token_file))

    def state() -> dict[str, object]:
        return control.snapshot(bucket.schedule.rate_now())

    @router.get("")
    async def show(actor: str = guard) -> dict[str, object]:
        return state()

    @router.post("/pause")
    async def pause(body: PauseBody, actor: str = guard) -> dict[str, object]:
        control.pause(_future(body.until), actor)
        log.warning("uplink paused by operator", extra={"actor": actor, "until": body.until})
        return state()

    @router.post("/resume")
    async def resume(actor: str = guard) -> dict[str, object]:
        control.resume(actor)
        log.warning("uplink resumed by operator", extra={"actor": actor})
        return state()

    @router.post("/cap")
    async def cap(body: CapBody, actor: str = guard) -> dict[str, object]:
        control.cap(body.bytes_per_second, _future(body.until), actor)
        log.warning(
            "uplink capped by operator",
            extra={"actor": actor, "bytes_per_second": body.bytes_per_second, "until": body.until},
        )
        return state()

    app.include_router(router)


# --- resend -------------------------------------------------------------------------------
# A reason is logged verbatim, so refuse what looks like an NHS number or a birth date.
_IDENTIFIER_LIKE = re.compile(
    r"(?<![\d.])\d{3}[ -]?\d{3}[ -]?\d{4}(?![\d.])"
    r"|(?<![\d.])\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}(?![\d.])"
    r"|(?<![\d.])(?:19|20)\d{2}-?[01]\d-?[0-3]\d(?![\d.])"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ResendBody(BaseModel):
    study_uid: str = Field(description="Study Instance UID of a study in this trailer's spool")
    reason: str = Field("", max_length=200, description="why (logged; no patient data)")


def _problem(status: int, title: str, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type="application/problem+json",
    )


def _objects(rows: list[QueuedObject]) -> list[dict[str, object]]:
    return [
        {
            "sop_instance_uid": r.sop_instance_uid,
            "dataset_sha256": r.dataset_sha256,
            "key_id": r.key_id,
            "sealed_size": r.sealed_size,
            "state": r.state,
            "purged_at": r.purged_at,
        }
        for r in rows
    ]


def _which(rows: list[QueuedObject], most: int = 5) -> str:
    """The objects in the way, by SOP Instance UID, for the operator's message."""
    if not rows:
        return ""
    named = ", ".join(r.sop_instance_uid for r in rows[:most])
    more = f" and {len(rows) - most} more" if len(rows) > most else ""
    return f" ({len(rows)} objects: {named}{more})"


def _spool_path(row: QueuedObject) -> str:
    """The received copy a sealed object came from (the codec mirrors the spool path)."""
    return OutgoingLayout.spool_relative(row.sealed_path)


class Resender:
    """Finds a study's objects through the gateway's spool index and the send queue and
    queues them again, all or none."""

    def __init__(
        self,
        queue: SendQueue,
        outgoing_dir: Path,
        spool_dir: Path,
        held_keys: Callable[[], Collection[str] | None] = lambda: None,
    ) -> None:
        self.queue = queue
        self.outgoing_dir = Path(outgoing_dir)
        self.outgoing = OutgoingLayout(self.outgoing_dir)
        self.layout = SpoolLayout(spool_dir)
        self._index: SpoolIndex | None = None
        self.held_keys = held_keys
        """Key ids the ingest holds (key sync's last listing); None: not known, and the
        ingest's permanent refusal is what stops a stale object then."""

    def _spool(self, study_uid: str) -> list[SpoolEntry]:
        if self._index is None:
            if not self.layout.index_path.exists():
                return []  # no gateway spool here (yet): the queue alone decides
            self._index = SpoolIndex(self.layout)
        return self._index.study(study_uid)

    def resend(self, study_uid: str, note: str) -> list[QueuedObject]:
        """Raises :class:`ResendRefused` (``unknown``, ``purged``, ``unsealed``,
        ``missing``, ``key_retired``, ``busy``) with nothing changed."""
        entries = self._spool(study_uid)
        rows = self.queue.find_study(study_uid)
        if not entries and not rows:
            raise ResendRefused("unknown", "study not in this trailer's spool", [])
        queued = {_spool_path(r) for r in rows}
        purged = [
            r
            for r in rows
            if r.purged_at is not None
            or any(e.status == STATUS_PURGED and e.spool_path == _spool_path(r) for e in entries)
        ]
        if purged or any(e.status == STATUS_PURGED for e in entries):
            raise ResendRefused("purged", "already deleted by the janitor after retention", purged)
        if any(e.spool_path not in queued for e in entries):
            raise ResendRefused(
                "unsealed",
                "not all received objects are sealed and queued "
                "yet; they are still on their first way",
                [],
            )
        missing = [r for r in rows if not self.outgoing.sealed_file(r.sealed_path).is_file()]
        if missing:
            raise ResendRefused("missing", "sealed files missing from the outgoing spool", missing)
        held = self.held_keys()
        stale = [r for r in rows if held is not None and r.key_id not in held]
        if stale:
            raise ResendRefused(
                "key_retired",
                "sealed for a key the data centre no longer "
                "holds (retired): the ingest would refuse them; send the "
                "study again from the modality",
                stale,
            )
        return self.queue.resend_study(study_uid, note)

    def cancel(self, study_uid: str, note: str) -> tuple[list[QueuedObject], list[QueuedObject]]:
        """Take a resend back; see :meth:`SendQueue.cancel_resend`."""
        return self.queue.cancel_resend(study_uid, note)


_REFUSAL_STATUS = {
    "unknown": 404,
    "purged": 404,
    "missing": 404,
    "unsealed": 409,
    "busy": 409,
    "key_retired": 409,
    "not_resent": 409,
}


def add_resend_route(
    app: FastAPI, resender: Resender, wake: Callable[[], None], token_file: Path | None
) -> None:
    """Mount ``POST /v1/admin/resend`` on ``app``."""
    guard = Depends(admin_guard(token_file))

    @app.post("/v1/admin/resend", response_model=None)
    async def resend(body: ResendBody, actor: str = guard) -> dict[str, object] | JSONResponse:
        study = body.study_uid.strip()
        if not is_valid_uid(study):
            return _problem(
                400, "malformed UID", "study_uid is not a DICOM UID (digits and dots, at most 64)"
            )
        reason = _CONTROL.sub(" ", body.reason).strip()
        if _IDENTIFIER_LIKE.search(reason):
            return _problem(
                400,
                "reason refused",
                "the reason looks like it holds an NHS "
                "number or a date: give the why without patient data",
            )
        try:
            rows = await asyncio.to_thread(resender.resend, study, f"by {actor}")
        except ResendRefused as exc:
            log.warning(
                "resend refused",
                extra={"actor": actor, "study_instance_uid": study, "refusal": exc.kind},
            )
            return _problem(
                _REFUSAL_STATUS[exc.kind],
                f"resend refused: {exc.kind}",
                f"study {study}: {exc}" + _which(exc.objects),
                refusal=exc.kind,
                study_uid=study,
                objects=_objects(exc.objects),
            )
        wake()
        at = time.time()
        log.warning(
            "study queued again by operator",
            extra={
                "actor": actor,
                "study_instance_uid": study,
                "objects": len(rows),
                "reason": reason,
                "at": at,
            },
        )
        return {
            "study_uid": study,
            "requested_by": actor,
            "requested_at": at,
            "reason": reason,
            "count": len(rows),
            "bytes": sum(r.sealed_size for r in rows),
            "objects": _objects(rows),
        }

    @app.post("/v1/admin/resend/cancel", response_model=None)
    async def cancel(body: ResendBody, actor: str = guard) -> dict[str, object] | JSONResponse:
        study = body.study_uid.strip()
        if not is_valid_uid(study):
            return _problem(
                400, "malformed UID", "study_uid is not a DICOM UID (digits and dots, at most 64)"
            )
        try:
            taken, sent = await asyncio.to_thread(resender.cancel, study, f"by {actor}")
        except ResendRefused as exc:
            log.warning(
                "resend cancel refused",
                extra={"actor": actor, "study_instance_uid": study, "refusal": exc.kind},
            )
            return _problem(
                _REFUSAL_STATUS[exc.kind],
                f"cancel refused: {exc.kind}",
                f"study {study}: {exc}" + _which(exc.objects),
                refusal=exc.kind,
                study_uid=study,
                objects=_objects(exc.objects),
            )
        log.warning(
            "resend cancelled by operator",
            extra={
                "actor": actor,
                "study_instance_uid": study,
                "objects": len(taken),
                "already_sent": len(sent),
            },
        )
        return {
            "study_uid": study,
            "cancelled_by": actor,
            "cancelled_at": time.time(),
            "count": len(taken),
            "objects": _objects(taken),
            "already_sent": _objects(sent),
        }
