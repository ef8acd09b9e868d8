"""Sealing-key rotation over HTTP: the admin API `trailerlinkctl keys` calls, and the
key listing + unsent report trailers use (mutual TLS, in :mod:`tus`).

Admin (HTTP port, admin token, audited)::

    GET  /v1/admin/keys                  every key: current?, fingerprint, outstanding, retirable
    POST /v1/admin/keys/rotate           new key pair, made current
    POST /v1/admin/keys/{key_id}/retire  delete a superseded private key (409 while needed);
                                         answers how many spool copies on trailers it made
                                         unresendable (unresendable_spool_copies)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from trailerlink_common.admin import admin_guard

from trailerlink_ingest.identity import AccessListFile
from trailerlink_ingest.keys import KeyRefused, KeyStore
from trailerlink_ingest.ledger import Ledger
from trailerlink_ingest.uploads import UploadStore


class KeyStatus:
    """What still needs each key: uploads at the ingest and trailers' unsent objects."""

    def __init__(
        self,
        keys: KeyStore,
        uploads: UploadStore,
        ledger: Ledger,
        access: AccessListFile,
        settle_seconds: float,
    ) -> None:
        self.keys = keys
        self.uploads = uploads
        self.ledger = ledger
        self.access = access
        self.settle_seconds = settle_seconds

    def _uploads_by_key(self) -> tuple[Counter[str], Counter[str]]:
        """(unfinished uploads, complete uploads without a receipt) per key id."""
        in_progress: Counter[str] = Counter()
        unverified: Counter[str] = Counter()
        for info in self.uploads.all_uploads():
            key_id = str(info.metadata.get("key_id", ""))
            if not info.complete:
                in_progress[key_id] += 1
            elif self.ledger.receipt_for_upload(info.upload_id) is None:
                unverified[key_id] += 1
        return in_progress, unverified

    def blockers(
        self,
        key_id: str,
        superseded_at: float | None,
        counts: tuple[Counter[str], Counter[str]] | None = None,
    ) -> list[str]:
        """Why ``key_id``'s private key may not go yet (empty: it may)."""
        in_progress, unverified = counts or self._uploads_by_key()
        reasons = []
        if in_progress[key_id]:
            reasons.append(f"{in_progress[key_id]} uploads sealed with it in progress")
        if unverified[key_id]:
            reasons.append(f"{unverified[key_id]} uploads sealed with it not yet verified")
        # A trailer's report counts once it was made long enough after the switch for
        # objects sealed during the switch-over to have reached its send queue.
        since = (superseded_at or time.time()) + self.settle_seconds
        for trailer in sorted(self.access.current().allow):
            report = self.keys.report(trailer)
            if report is None or report.reported_at < since:
                reasons.append(
                    f"trailer {trailer} has not reported its unsent objects "
                    "since the key was superseded"
                )
            elif report.unsent_by_key_id.get(key_id, 0):
                reasons.append(
                    f"trailer {trailer} has {report.unsent_by_key_id[key_id]} "
                    "objects sealed with it unsent"
                )
        return reasons

    def resendable(self, key_id: str) -> int:
        """Spool copies on all trailers, as last reported, sealed with ``key_id``."""
        total = 0
        for trailer in sorted(self.access.current().allow):
            report = self.keys.report(trailer)
            if report is not None:
                total += report.resendable_by_key_id.get(key_id, 0)
        return total

    def blockers_now(self, key_id: str) -> list[str]:
        fact = next((f for f in self.keys.key_facts() if f["key_id"] == key_id), None)
        return self.blockers(key_id, fact["superseded_at"] if fact else None)

    def status(self) -> dict[str, Any]:
        counts = self._uploads_by_key()
        in_progress, unverified = counts
        trailers = []
        unsent: Counter[str] = Counter()
        resendable: Counter[str] = Counter()
        for trailer in sorted(self.access.current().allow):
            report = self.keys.report(trailer)
            trailers.append(
                {
                    "trailer_id": trailer,
                    "reported_at": report.reported_at if report else None,
                    "sealing_key_id": report.sealing_key_id if report else "",
                    "unsent_by_key_id": report.unsent_by_key_id if report else {},
                    "resendable_by_key_id": report.resendable_by_key_id if report else {},
                }
            )
            if report:
                unsent.update(report.unsent_by_key_id)
                resendable.update(report.resendable_by_key_id)
        keys = []
        for fact in self.keys.key_facts():
            key_id = fact["key_id"]
            reasons = (
                ["current key"]
                if fact["current"]
                else self.blockers(key_id, fact["superseded_at"], counts)
            )
            keys.append(
                {
                    "key_id": key_id,
                    "created_at": fact["created_at"],
                    "superseded_at": fact["superseded_at"],
                    "current": fact["current"],
                    "public_key_fingerprint": fact["public_key_fingerprint"],
                    "outstanding": {
                        "uploads_in_progress": in_progress[key_id],
                        "uploads_unverified": unverified[key_id],
                        "trailers_unsent": unsent[key_id],
                    },
                    # Spool copies sealed with it that a resend could still queue: retiring
                    # the key makes them unresendable (they stay in PACS; re-send from the
                    # modality if ever needed).
                    "unresendable_if_retired": resendable[key_id],
                    "retirable": not reasons,
                    "blockers": reasons,
                }
            )
        return {
            "current_key_id": self.keys.current_key_id(),
            "keys": keys,
            "trailers": trailers,
            "settle_seconds": self.settle_seconds,
        }


def add_key_admin_routes(app: FastAPI, status: KeyStatus, token_file: Any) -> None:
    """Mount ``/v1/admin/keys...`` on ``app`` (the HTTP port)."""
    router = APIRouter(prefix="/v1/admin/keys")
    guard = Depends(admin_guard(token_file))

    def refused(exc: KeyRefused) -> HTTPException:
        return HTTPException(exc.status, exc.message)

    @router.get("")
    async def listing(actor: str = guard) -> dict[str, Any]:
        return await asyncio.to_thread(status.status)

    @router.post("/rotate")
    async def rotate(actor: str = guard) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(status.keys.rotate, actor)
        except KeyRefused as exc:
            raise refused(exc) from None
        except OSError:
            raise HTTPException(503, "sealing keys directory is not writable") from None

    @router.post("/{key_id}/retire")
    async def retire(key_id: str, actor: str = guard) -> dict[str, Any]:
        try:
            # Counted before the key goes: reports keep arriving, the answer says what
            # this retirement did.
            unresendable = await asyncio.to_thread(status.resendable, key_id)
            done = await asyncio.to_thread(status.keys.retire, key_id, actor, status.blockers_now)
            return {**done, "unresendable_spool_copies": unresendable}
        except KeyRefused as exc:
            raise refused(exc) from None
        except OSError:
            raise HTTPException(503, "sealing keys directory is not writable") from None

    app.include_router(router)
