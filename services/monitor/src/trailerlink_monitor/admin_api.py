"""The monitor's admin API (both modes): this site's dead letters for `trailerlinkctl`.

Every route needs the admin token (``trailerlink_common.admin``). Replays and discards
are recorded (who, when, why) before the answer; answers carry ids, UIDs and reasons,
never an event's payload.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from trailerlink_common.admin import admin_guard
from trailerlink_events.deadletters import AlreadyDone, DeadLetters, UnknownEntry

log = logging.getLogger(__name__)


class ActionBody(BaseModel):
    reason: str = Field("", max_length=1000)


def add_admin_routes(app: FastAPI, dead_letters: DeadLetters, token_file: Path | None) -> None:
    """Mount ``/v1/admin/dlq...`` on ``app``."""
    router = APIRouter(prefix="/v1/admin/dlq")
    guard = Depends(admin_guard(token_file))

    def _ready() -> None:
        if not dead_letters.producer.connected:
            raise HTTPException(503, "not connected to Kafka yet")

    @router.get("")
    async def list_entries(
        include_done: bool = False, limit: int = 1000, actor: str = guard
    ) -> dict[str, object]:
        entries = await dead_letters.list(include_done=include_done, limit=max(1, limit))
        return {"topic": dead_letters.topic, "entries": [e.to_json() for e in entries]}

    @router.get("/{entry_id}")
    async def show(entry_id: str, actor: str = guard) -> dict[str, object]:
        try:
            return (await dead_letters.show(entry_id)).to_json()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except UnknownEntry:
            raise HTTPException(404, f"no dead letter {entry_id} in {dead_letters.topic}") from None

    @router.post("/{entry_id}/{action}")
    async def act(
        entry_id: str, action: str, body: ActionBody, actor: str = guard
    ) -> dict[str, object]:
        if action not in ("replay", "discard"):
            raise HTTPException(404, "action must be replay or discard")
        _ready()
        try:
            if action == "replay":
                done = await dead_letters.replay(entry_id, actor, body.reason)
            else:
                done = await dead_letters.discard(entry_id, actor, body.reason)
        except UnknownEntry:
            raise HTTPException(404, f"no dead letter {entry_id} in {dead_letters.topic}") from None
        except AlreadyDone as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        log.warning(
            "dead letter %s",
            done.action,
            extra={
                "dlq_topic": dead_letters.topic,
                "entry_id": entry_id,
                "actor": actor,
                "reason": done.reason,
            },
        )
        return {
            "topic": dead_letters.topic,
            "id": entry_id,
            "action": done.action,
            "actor": done.actor,
            "reason": done.reason,
            "at": done.at,
        }

    app.include_router(router)
