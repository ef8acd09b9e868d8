"""The worklist's admin API for `trailerlinkctl worklist show`: what the modality sees.

``GET /v1/admin/worklist?date=YYYY-MM-DD&show_names=false`` answers a day's scheduled
steps from the cache that serves C-FIND, with the SPS status the modality is shown.
Names and birth dates are left out and patient ids masked unless ``show_names=true``;
that request is audited: a row in the cache's ``admin_audit`` table and a log line
naming the operator, the day and the number of steps, never the names themselves
(``GET /v1/admin/worklist/audit`` lists the rows). Needs the admin token
(``trailerlink_common.admin``).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from trailerlink_common.admin import admin_guard

from trailerlink_worklist.cache import CachedStep
from trailerlink_worklist.model import SPS_STATUS
from trailerlink_worklist.upstream import LinkStatus
from trailerlink_worklist.worklist import Worklist

log = logging.getLogger(__name__)

NAMES_SHOWN = "worklist_names_shown"
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def parse_day(text: str) -> str:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as ``YYYYMMDD``; ``ValueError`` otherwise."""
    match = _DATE.match(text.strip())
    if not match:
        raise ValueError(f"date {text!r} is not YYYY-MM-DD")
    day = "".join(match.groups())
    datetime.strptime(day, "%Y%m%d")  # a real calendar day (no 2026-02-30)
    return day


def mask_id(value: str) -> str:
    """All but the last three characters hidden: enough to match a phone call."""
    return "*" * max(0, len(value) - 3) + value[-3:] if len(value) > 3 else "*" * len(value)


def _clock(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 else value


def step_view(cached: CachedStep, show_names: bool) -> dict[str, Any]:
    """One step as the admin API answers it (README: `worklist show --json`)."""
    s = cached.step
    return {
        "scheduled_time": _clock(s.scheduled_time),
        "accession_number": s.accession_number,
        "scheduled_procedure_step_id": s.scheduled_procedure_step_id,
        "study_instance_uid": s.study_instance_uid,
        "modality": s.modality,
        "station_ae_title": s.scheduled_station_ae_title,
        "location": s.scheduled_location,
        "description": s.scheduled_step_description or s.requested_procedure_description,
        "status": cached.status.value,
        "sps_status": SPS_STATUS[cached.status],
        "patient_name": s.patient_name if show_names else None,
        "patient_id": s.patient_id if show_names else mask_id(s.patient_id),
        "issuer_of_patient_id": s.issuer_of_patient_id,
        "birth_date": s.patient_birth_date if show_names else None,
        "sex": s.patient_sex,
    }


class WorklistAdmin:
    """The day as the modality sees it, for support."""

    def __init__(
        self, worklist: Worklist, link: LinkStatus | None, trailer_id: str, site_code: str
    ) -> None:
        self.worklist = worklist
        self.link = link
        self.trailer_id = trailer_id
        self.site_code = site_code

    def show(self, day: str, show_names: bool, actor: str) -> dict[str, Any]:
        steps = self.worklist.cache.steps(day)
        if show_names:
            self.worklist.cache.audit(actor, NAMES_SHOWN, f"date={day} steps={len(steps)}")
            log.warning(
                "worklist shown with patient names",
                extra={"actor": actor, "date": day, "steps": len(steps)},
            )
        last = self.worklist.last_sync()
        return {
            "trailer_id": self.trailer_id,
            "site_code": self.site_code,
            "date": f"{day[:4]}-{day[4:6]}-{day[6:]}",
            "names_shown": show_names,
            "cache_age_seconds": round(time.time() - last, 1) if last else None,
            "upstream_up": self.link.up if self.link else None,
            "steps": [step_view(c, show_names) for c in steps],
        }

    def install(self, app: FastAPI, token_file: Path | None) -> None:
        """Mount ``/v1/admin/worklist`` on ``app``."""
        router = APIRouter(prefix="/v1/admin/worklist")
        guard = Depends(admin_guard(token_file))

        @router.get("")
        def show(date: str = "", show_names: bool = False, actor: str = guard) -> dict[str, Any]:
            try:
                day = parse_day(date) if date else self.worklist.clock.today_str()
            except ValueError:
                raise HTTPException(400, "date must be YYYY-MM-DD") from None
            return self.show(day, show_names, actor)

        @router.get("/audit")
        def audit(limit: int = 100, actor: str = guard) -> dict[str, Any]:
            return {"records": self.worklist.cache.audit_records(max(1, min(limit, 1000)))}

        app.include_router(router)
