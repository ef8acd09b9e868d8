"""Storage commitment, the running part: takes N-ACTION requests, listens to delivery
events, and sends each N-EVENT-REPORT when :func:`~trailerlink_gateway.commitment.judge`
says the request can be answered. The DICOM sending is behind :class:`Reporter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from trailerlink_events.kafka import Delivery
from trailerlink_events.messages import ObjectDelivered, ObjectFailed
from trailerlink_spool.index import SpoolIndex

from trailerlink_gateway import metrics
from trailerlink_gateway.commitment import (
    CommitItem,
    CommitmentStore,
    CommitRequest,
    Outcome,
    Verdict,
    judge,
)

log = logging.getLogger(__name__)

# With nothing to wake it, the committer still looks every so often (deadlines).
_TICK_SECONDS = 5.0


class Reporter(Protocol):
    def send(self, request: CommitRequest, verdict: Verdict) -> bool:
        """Deliver the N-EVENT-REPORT (blocking); True when the modality accepted it."""
        ...


class Committer:
    """Owns the commitment requests from N-ACTION to N-EVENT-REPORT."""

    def __init__(
        self,
        store: CommitmentStore,
        index: SpoolIndex,
        reporter: Reporter,
        deadline_seconds: float,
        retry_seconds: float = 30.0,
        retention_seconds: float = 30 * 86400.0,
    ) -> None:
        self.store = store
        self.index = index
        self.reporter = reporter
        self.deadline_seconds = deadline_seconds
        self.retry_seconds = retry_seconds
        self.retention_seconds = retention_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # --- inputs ------------------------------------------------------------------
    def request(
        self, transaction_uid: str, calling_ae_title: str, items: Sequence[CommitItem]
    ) -> None:
        """Record an N-ACTION request durably (from the association's thread)."""
        new = self.store.add_request(
            transaction_uid,
            calling_ae_title,
            items,
            deadline_at=time.time() + self.deadline_seconds,
        )
        log.info(
            "storage commitment requested",
            extra={
                "transaction_uid": transaction_uid,
                "calling_ae": calling_ae_title,
                "instances": len(items),
                "repeat": not new,
            },
        )
        metrics.COMMITMENTS_PENDING.set(self.store.pending_count())
        self.wake()

    async def on_delivery_event(self, delivery: Delivery) -> None:
        """ConsumerRunner handler for ObjectDelivered and ObjectFailed."""
        event = delivery.event
        if isinstance(event, ObjectDelivered):
            outcome = Outcome(True, event.dataset_sha256)
        elif isinstance(event, ObjectFailed):
            outcome = Outcome(
                False, event.dataset_sha256, int(event.reason_code), bool(event.permanent)
            )
        else:
            return
        uid = event.object.sop_instance_uid
        if not uid:
            return
        await asyncio.to_thread(self.store.record_outcome, uid, outcome)
        self.wake()

    def wake(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    # --- deciding and answering ---------------------------------------------------
    def verdicts(self, now: float | None = None) -> list[tuple[CommitRequest, Verdict]]:
        """Judge every open request (blocking; SQLite reads)."""
        now = time.time() if now is None else now
        judged = []
        for request in self.store.open_requests():
            uids = [i.sop_instance_uid for i in request.items]
            copies = {uid: self.index.copies(uid) for uid in set(uids)}
            judged.append((request, judge(request, copies, self.store.outcomes(uids), now)))
        return judged

    def answer_ready(self, now: float | None = None) -> int:
        """Send every report that is due; returns how many were delivered (blocking)."""
        now = time.time() if now is None else now
        sent = 0
        judged = self.verdicts(now)
        metrics.COMMITMENT_LAST_PASS.set(now)
        for request, verdict in judged:
            if not verdict.ready or request.next_attempt_at > now:
                continue
            try:
                delivered = self.reporter.send(request, verdict)
            except Exception as exc:
                log.warning(
                    "N-EVENT-REPORT failed",
                    extra={"transaction_uid": request.transaction_uid, "error": type(exc).__name__},
                )
                delivered = False
            if delivered:
                self.store.mark_answered(request.transaction_uid, verdict.event_type)
                result = "success" if not verdict.failed else "some_failed"
                metrics.COMMITMENTS_ANSWERED.labels(result).inc()
                log.info(
                    "storage commitment answered",
                    extra={
                        "transaction_uid": request.transaction_uid,
                        "result": result,
                        "committed": len(verdict.committed),
                        "failed": len(verdict.failed),
                    },
                )
                sent += 1
            else:
                metrics.COMMITMENT_REPORT_FAILURES.inc()
                self.store.postpone(request.transaction_uid, time.time() + self.retry_seconds)
        metrics.COMMITMENTS_PENDING.set(self.store.pending_count())
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Service task: answer what is due whenever something changes."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        last_prune = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                await asyncio.to_thread(self.answer_ready)
                if time.time() - last_prune > 3600:
                    last_prune = time.time()
                    await asyncio.to_thread(self.store.prune, time.time() - self.retention_seconds)
            except Exception:
                log.exception("storage commitment pass failed")
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            await asyncio.wait(waiters, timeout=_TICK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
