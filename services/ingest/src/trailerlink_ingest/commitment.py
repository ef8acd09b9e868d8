"""Optional PACS storage commitment (``PACS_STORAGE_COMMITMENT``, off by default).

With it on, an object the PACS took (C-STORE success) is not yet *delivered*: the
processor sends an N-ACTION (Storage Commitment Push Model, one transaction per object)
and records the transaction in the ledger; the object is delivered — receipt written,
``object-delivered`` with ``storage_committed`` published, sealed upload removed — only
when the PACS's N-EVENT-REPORT says it committed it. A report listing it as failed
gives a failed receipt (``PACS_REFUSED``, stage ``ingest.commitment``).

The PACS sends its report in an association it opens to ``CALLING_AE_TITLE`` at
``COMMITMENT_PORT`` (register the ingest's Service there in the PACS). Any replica may
get it: the listener only writes the result into the ledger, and every replica's
finisher turns recorded results into receipts (idempotent per upload), so nothing
depends on which replica asked. A transaction without a report after
``COMMITMENT_TIMEOUT_SECONDS`` is asked again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from typing import Any, Protocol

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events.messages import FailureReason, UploadCompleted

from trailerlink_ingest.ledger import Commitment, Ledger, Receipt
from trailerlink_ingest.pacs import PacsTarget, PacsUnavailable

log = logging.getLogger(__name__)

# The Storage Commitment Push Model's well-known SOP Instance and action type.
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_ACTION = 1
FINISH_INTERVAL_SECONDS = 1.0


def transaction_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def request_commitment(
    target: PacsTarget,
    transaction: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    called_ae: str = "",
) -> None:
    """Send the N-ACTION to ``called_ae`` (the AE the object was stored at; default the
    PACS's); PacsUnavailable if the PACS does not accept the request."""
    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(target.host, target.port, ae_title=called_ae or target.ae_title)
    if not assoc.is_established:
        raise PacsUnavailable("storage commitment: PACS not reachable or refused the association")
    try:
        request = Dataset()
        request.TransactionUID = transaction
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class_uid
        ref.ReferencedSOPInstanceUID = sop_instance_uid
        request.ReferencedSOPSequence = [ref]
        status, _reply = assoc.send_n_action(
            request, REQUEST_ACTION, StorageCommitmentPushModel, COMMITMENT_INSTANCE
        )
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or int(getattr(status, "Status", -1)) != 0:
        code = int(getattr(status, "Status", -1)) if status else -1
        raise PacsUnavailable(f"storage commitment request not accepted (status {code})")


def encode_event(event: UploadCompleted) -> str:
    return base64.b64encode(event.SerializeToString()).decode("ascii")


def decode_event(text: str) -> UploadCompleted:
    event = UploadCompleted()
    event.ParseFromString(base64.b64decode(text))
    return event


class CommitmentListener:
    """The SCP the PACS sends N-EVENT-REPORTs to; records results in the ledger."""

    def __init__(self, ledger: Ledger, ae_title: str, host: str, port: int) -> None:
        self.ledger = ledger
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.address = (host, port)
        self._server: Any = None

    def start(self) -> None:
        self._server = self.ae.start_server(
            self.address, block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_report(self, event: Any) -> tuple[int, None]:
        try:
            info = event.event_information
            transaction = str(info.TransactionUID)
            committed = {
                str(r.ReferencedSOPInstanceUID) for r in info.get("ReferencedSOPSequence", [])
            }
            failed = {
                str(r.ReferencedSOPInstanceUID): int(r.get("FailureReason", 0x0110))
                for r in info.get("FailedSOPSequence", [])
            }
        except (AttributeError, ValueError, KeyError):
            log.warning("storage commitment report not understood")
            return 0x0110, None  # processing failure
        recorded = 0
        for sop in committed:
            recorded += self.ledger.record_commitment_result(transaction, sop, "committed")
        for sop, reason in failed.items():
            recorded += self.ledger.record_commitment_result(
                transaction, sop, f"failed:{reason:04X}"
            )
        log.info(
            "storage commitment report",
            extra={
                "transaction_uid": transaction,
                "committed": len(committed),
                "failed": len(failed),
                "recorded": recorded,
            },
        )
        return 0x0000, None


class Publisher(Protocol):
    """What the finisher needs of the processor: make an outcome's receipt, then record
    and publish it. A Protocol, so this module need not import processor.py (which
    imports this one to ask for commitment)."""

    def delivered(
        self,
        event: UploadCompleted,
        ts: str,
        status: int,
        *,
        duplicate: bool,
        committed: bool = False,
    ) -> Receipt: ...

    def failed(
        self, event: UploadCompleted, code: int, stage: str, reason: str, *, dicom_status: int = 0
    ) -> Receipt: ...

    async def outcome(
        self, event: UploadCompleted, receipt: Receipt, object_state: str | None
    ) -> None: ...


class CommitmentFinisher:
    """Turns recorded commitment results into outcomes; asks again after the timeout."""

    def __init__(
        self, ledger: Ledger, processor: Publisher, pacs: PacsTarget, timeout_seconds: float
    ) -> None:
        self.ledger = ledger
        self.processor = processor
        self.pacs = pacs
        self.timeout_seconds = timeout_seconds

    async def finish_once(self) -> int:
        done = 0
        for row in await asyncio.to_thread(self.ledger.commitments_reported):
            await self._finish(row)
            done += 1
        overdue = await asyncio.to_thread(
            self.ledger.commitments_overdue, time.time() - self.timeout_seconds
        )
        for row in overdue:
            try:
                await asyncio.to_thread(
                    request_commitment,
                    self.pacs,
                    row.transaction_uid,
                    row.sop_class_uid,
                    row.sop_instance_uid,
                    row.called_ae_title,
                )
            except PacsUnavailable as exc:
                log.info(
                    "storage commitment not asked again yet",
                    extra={"upload_id": row.upload_id, "error": str(exc)},
                )
                continue
            await asyncio.to_thread(self.ledger.touch_commitment, row.transaction_uid)
        return done

    async def _finish(self, row: Commitment) -> None:
        event = decode_event(row.event)
        if row.result == "committed":
            receipt = self.processor.delivered(
                event,
                row.stored_transfer_syntax_uid,
                row.dicom_status,
                duplicate=False,
                committed=True,
            )
            await self.processor.outcome(event, receipt, "delivered")
            return
        status = int(row.result.partition(":")[2] or "0", 16)
        receipt = self.processor.failed(
            event,
            FailureReason.Value("FAILURE_REASON_PACS_REFUSED"),
            "ingest.commitment",
            f"PACS did not commit the object (failure reason 0x{status:04X})",
            dicom_status=status,
        )
        await self.processor.outcome(event, receipt, "refused")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.finish_once()
            except Exception:
                log.exception("storage commitment pass failed; next pass retries")
            await sleep_or_stop(stop, FINISH_INTERVAL_SECONDS)
