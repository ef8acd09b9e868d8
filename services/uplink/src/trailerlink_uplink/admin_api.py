"""The uplink's admin API for `trailerlinkctl uplink`: pause, resume, cap.

Needs the admin token (``trailerlink_common.admin``); every change is logged with the
operator's name and kept across restarts (:mod:`trailerlink_uplink.control`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from trailerlink_common.admin import admin_guard

from trailerlink_uplink.bandwidth import TokenBucket
from trailerlink_uplink.control import OperatorControl

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


def add_admin_routes(app: FastAPI, control: OperatorControl, bucket: TokenBucket,
                     token_file: Path | None) -> None:
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
        log.warning("uplink capped by operator", extra={
            "actor": actor, "bytes_per_second": body.bytes_per_second, "until": body.until})
        return state()

    app.include_router(router)
