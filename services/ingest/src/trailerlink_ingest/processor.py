"""The ingest's Kafka hop: an upload is complete → open it, verify it, decide with the
ledger, store it in PACS, record and publish the outcome.

Every step is idempotent, so a redelivered event (crash, rebalance, replay) repeats
the receipt instead of storing twice: a receipt, once recorded for an upload, is the
answer for that upload forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from trailerlink_common.durable import fsync_dir
from trailerlink_events import topics
from trailerlink_events.kafka import Delivery, DependencyUnavailable, EventProducer, PermanentError
from trailerlink_events.messages import (
    FailureReason,
    ObjectDelivered,
    ObjectFailed,
    ObjectIdentity,
    UploadCompleted,
    new_meta,
    timestamp,
)
from trailerlink_sealed import (
    IntegrityError,
    KeyUnwrapError,
    OpeningKeyring,
    SealedFormatError,
    UnknownKeyError,
    read_sealed_header,
    unseal_to_file,
)
from trailerlink_spool.part10 import NotPart10Error, dataset_offset

from trailerlink_ingest import metrics
from trailerlink_ingest.commitment import encode_event, request_commitment, transaction_uid
from trailerlink_ingest.ledger import ClaimKind, Commitment, Ledger, LedgerUnavailable, Receipt
from trailerlink_ingest.pacs import (
    PacsRefused,
    PacsTarget,
    PacsUnavailable,
    StoreResult,
    called_ae_title,
    store,
)
from trailerlink_ingest.uploads import UploadStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.ingest")

PRODUCER = "ingest"


class VerifyFailed(Exception):
    def __init__(self, code: int, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    dataset_sha256: str


def reason_name(code: int) -> str:
    return FailureReason.Name(code).removeprefix("FAILURE_REASON_")


def event_key(trailer_id: str, study_uid: str) -> str:
    return f"{trailer_id}/{study_uid}"


def _dataset_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(65536)
        offset = dataset_offset(head)
        f.seek(offset)
        digest = hashlib.sha256()
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def open_and_verify(
    sealed: Path, out: Path, event: UploadCompleted, keys: OpeningKeyring
) -> Verified:
    """Unseal ``sealed`` into ``out`` and check it is exactly the object announced.

    Raises :class:`VerifyFailed` (nothing left at ``out``) when the sealed object does
    not open, does not reproduce its hashes, or is another object than announced.
    """
    unsealable = FailureReason.Value("FAILURE_REASON_UNSEALABLE")
    verify_failed = FailureReason.Value("FAILURE_REASON_VERIFY_FAILED")
    try:
        header = read_sealed_header(sealed)
    except SealedFormatError as exc:
        raise VerifyFailed(unsealable, "ingest.unseal", f"not a sealed object: {exc}") from None
    if header.key_id != event.key_id:
        raise VerifyFailed(verify_failed, "ingest.verify", "sealed for another key than announced")
    if header.dataset_sha256 is not None and header.dataset_sha256 != event.dataset_sha256:
        raise VerifyFailed(
            verify_failed,
            "ingest.verify",
            "sealed object carries another dataset SHA-256 than announced",
        )
    if event.file_sha256 and header.original_sha256 != event.file_sha256:
        raise VerifyFailed(
            verify_failed,
            "ingest.verify",
            "sealed object carries another file SHA-256 than announced",
        )
    try:
        unseal_to_file(sealed, out, keys)
    except (UnknownKeyError, KeyUnwrapError) as exc:
        raise VerifyFailed(unsealable, "ingest.unseal", f"cannot open: {exc}") from None
    except IntegrityError as exc:
        raise VerifyFailed(
            verify_failed, "ingest.verify", f"verification failed: {type(exc).__name__}"
        ) from None
    try:
        if header.dataset_sha256 is None and _dataset_sha256(out) != event.dataset_sha256:
            raise VerifyFailed(
                verify_failed, "ingest.verify", "dataset SHA-256 differs from the one announced"
            )
        try:
            ds = dcmread(out, stop_before_pixels=True)
            sop_uid = str(ds.SOPInstanceUID)
            study_uid = str(ds.StudyInstanceUID)
            sop_class = str(ds.SOPClassUID)
            ts = str(ds.file_meta.TransferSyntaxUID)
        except (InvalidDicomError, AttributeError, ValueError, NotPart10Error, EOFError):
            raise VerifyFailed(
                FailureReason.Value("FAILURE_REASON_UNPARSEABLE"),
                "ingest.verify",
                "object is not parseable DICOM",
            ) from None
        ident = event.object
        if sop_uid != ident.sop_instance_uid or study_uid != ident.study_instance_uid:
            raise VerifyFailed(
                verify_failed, "ingest.verify", "object's UIDs differ from the ones announced"
            )
    except VerifyFailed:
        out.unlink(missing_ok=True)
        raise
    return Verified(out, sop_class, ts, event.dataset_sha256)


class Processor:
    """Handles ``upload-completed`` events (a ConsumerRunner handler)."""

    def __init__(
        self,
        *,
        uploads: UploadStore,
        ledger: Ledger,
        keys: OpeningKeyring,
        pacs: PacsTarget,
        producer: EventProducer,
        work_dir: Path,
        keep_delivered: bool = False,
        storage_commitment: bool = False,
    ) -> None:
        self.uploads = uploads
        self.ledger = ledger
        self.keys = keys
        self.pacs = pacs
        self.producer = producer
        self.work_dir = Path(work_dir)
        self.keep_delivered = keep_delivered
        self.storage_commitment = storage_commitment
        self.conflict_dir = uploads.root / "conflicts"

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, UploadCompleted)
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(
                "ingest.process",
                attributes={
                    "dicom.sop_instance_uid": event.object.sop_instance_uid,
                    "trailerlink.trailer_id": event.meta.trailer_id,
                    "trailerlink.upload_id": event.upload_id,
                },
            ):
                await self._handle(event)
        except LedgerUnavailable as exc:
            raise DependencyUnavailable(str(exc)) from None
        metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)

    async def _handle(self, event: UploadCompleted) -> None:
        trailer = event.meta.trailer_id
        done = await asyncio.to_thread(self.ledger.receipt_for_upload, event.upload_id)
        if done is not None:
            await self._publish(done, event)  # a replay: repeat the outcome
            await self._cleanup(event, done)
            return
        try:
            expected = self.uploads.data_path(trailer, event.upload_id)
            sealed = self.uploads.resolve(event.storage_path)
        except ValueError:
            raise PermanentError("event names no valid upload of its trailer") from None
        if sealed != expected.resolve():
            raise PermanentError("event's storage path is not its upload's")
        if not sealed.exists():
            raise PermanentError("the upload's sealed bytes are gone and it has no receipt")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        out = self.work_dir / f"{event.upload_id}.dcm"
        try:
            if out.exists():  # verified on an earlier attempt (written atomically)
                verified = await asyncio.to_thread(self._reread, out, event)
            else:
                verified = await asyncio.to_thread(open_and_verify, sealed, out, event, self.keys)
        except VerifyFailed as failed:
            metrics.VERIFY_FAILURES.labels(reason_name(failed.code).lower()).inc()
            log.error(
                "upload failed verification",
                extra={
                    "trailer": trailer,
                    "upload_id": event.upload_id,
                    "stage": failed.stage,
                    "reason": failed.reason,
                },
            )
            await self.outcome(
                event, self.failed(event, failed.code, failed.stage, failed.reason), None
            )
            return
        kind, row = await asyncio.to_thread(
            self.ledger.claim,
            sop_instance_uid=event.object.sop_instance_uid,
            dataset_sha256=event.dataset_sha256,
            trailer_id=trailer,
            study_instance_uid=event.object.study_instance_uid,
            upload_id=event.upload_id,
        )
        if kind is ClaimKind.DUPLICATE:
            metrics.DUPLICATES.inc()
            receipt = self.delivered(
                event, row.stored_transfer_syntax_uid, row.dicom_status, duplicate=True
            )
            await self.outcome(event, receipt, None)
            out.unlink(missing_ok=True)
            return
        if kind is ClaimKind.CONFLICT:
            kept = await asyncio.to_thread(self._keep_conflict, out, event)
            await asyncio.to_thread(
                self.ledger.set_conflict_path,
                event.object.sop_instance_uid,
                event.dataset_sha256,
                kept,
            )
            metrics.UID_CONFLICTS.inc()
            log.error(
                "UID conflict: same SOP Instance UID with other content; both kept",
                extra={"trailer": trailer, "upload_id": event.upload_id, "kept_at": kept},
            )
            code = FailureReason.Value("FAILURE_REASON_UID_CONFLICT")
            await self.outcome(
                event,
                self.failed(
                    event,
                    code,
                    "ingest.ledger",
                    "SOP Instance UID already received with other content; copy kept, "
                    "not sent to PACS",
                ),
                None,
            )
            return
        if kind is ClaimKind.RETRY and row.state == "committing":
            # In PACS already, its commitment outstanding: ask again, never store twice.
            await self._request_commitment(
                event, verified, row.stored_transfer_syntax_uid, row.dicom_status
            )
            return
        await self._forward(event, verified)

    def _reread(self, out: Path, event: UploadCompleted) -> Verified:
        ds = dcmread(out, stop_before_pixels=True)
        return Verified(
            out, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), event.dataset_sha256
        )

    async def _forward(self, event: UploadCompleted, verified: Verified) -> None:
        await asyncio.to_thread(
            self.ledger.count_store_attempt, event.object.sop_instance_uid, event.dataset_sha256
        )
        with contextlib.suppress(LedgerUnavailable):
            metrics.PACS_BACKLOG.set(await asyncio.to_thread(self.ledger.backlog))
        try:
            with tracer.start_as_current_span(
                "ingest.pacs.store",
                kind=SpanKind.CLIENT,
                attributes={
                    "dicom.sop_instance_uid": event.object.sop_instance_uid,
                    "dicom.called_ae_title": self.pacs.ae_title,
                },
            ):
                result: StoreResult = await asyncio.to_thread(
                    store,
                    verified.path,
                    verified.sop_class_uid,
                    verified.transfer_syntax_uid,
                    self.pacs,
                )
        except PacsUnavailable as exc:
            raise DependencyUnavailable(f"PACS: {exc}") from None
        except PacsRefused as refused:
            code = FailureReason.Value("FAILURE_REASON_PACS_REFUSED")
            receipt = self.failed(
                event, code, "ingest.pacs", refused.reason, dicom_status=refused.status
            )
            await self.outcome(event, receipt, "refused")
            verified.path.unlink(missing_ok=True)
            raise PermanentError(
                f"PACS refused: status 0x{refused.status:04X}: {refused.reason}"
            ) from None
        if self.storage_commitment:
            await self._request_commitment(
                event, verified, result.transfer_syntax_uid, result.status
            )
            return
        receipt = self.delivered(event, result.transfer_syntax_uid, result.status, duplicate=False)
        await self.outcome(event, receipt, "delivered")
        verified.path.unlink(missing_ok=True)
        with contextlib.suppress(LedgerUnavailable):
            metrics.PACS_BACKLOG.set(await asyncio.to_thread(self.ledger.backlog))

    async def _request_commitment(
        self, event: UploadCompleted, verified: Verified, ts: str, status: int
    ) -> None:
        """Delivered only on the PACS's N-EVENT-REPORT (commitment.py finishes it)."""
        pending = await asyncio.to_thread(
            self.ledger.begin_commitment,
            Commitment(
                transaction_uid=transaction_uid(),
                upload_id=event.upload_id,
                sop_instance_uid=event.object.sop_instance_uid,
                sop_class_uid=verified.sop_class_uid,
                dataset_sha256=event.dataset_sha256,
                event=encode_event(event),
                stored_transfer_syntax_uid=ts,
                dicom_status=status,
                requested_at=time.time(),
                called_ae_title=await asyncio.to_thread(called_ae_title, verified.path, self.pacs),
            ),
        )
        try:
            await asyncio.to_thread(
                request_commitment,
                self.pacs,
                pending.transaction_uid,
                pending.sop_class_uid,
                pending.sop_instance_uid,
                pending.called_ae_title,
            )
        except PacsUnavailable as exc:
            raise DependencyUnavailable(f"PACS: {exc}") from None
        verified.path.unlink(missing_ok=True)

    # --- outcomes ---------------------------------------------------------------------
    def delivered(
        self,
        event: UploadCompleted,
        ts: str,
        status: int,
        *,
        duplicate: bool,
        committed: bool = False,
    ) -> Receipt:
        return Receipt(
            upload_id=event.upload_id,
            trailer_id=event.meta.trailer_id,
            sop_instance_uid=event.object.sop_instance_uid,
            study_instance_uid=event.object.study_instance_uid,
            dataset_sha256=event.dataset_sha256,
            outcome="delivered",
            dicom_status=status,
            stored_transfer_syntax_uid=ts,
            storage_committed=int(committed),
            duplicate=int(duplicate),
            permanent=1,
            at=time.time(),
        )

    def failed(
        self, event: UploadCompleted, code: int, stage: str, reason: str, *, dicom_status: int = 0
    ) -> Receipt:
        return Receipt(
            upload_id=event.upload_id,
            trailer_id=event.meta.trailer_id,
            sop_instance_uid=event.object.sop_instance_uid,
            study_instance_uid=event.object.study_instance_uid,
            dataset_sha256=event.dataset_sha256,
            outcome="failed",
            reason_code=reason_name(code),
            reason=reason[:500],
            stage=stage,
            dicom_status=dicom_status,
            permanent=1,
            at=time.time(),
        )

    async def outcome(
        self, event: UploadCompleted, receipt: Receipt, object_state: str | None
    ) -> None:
        stored = await asyncio.to_thread(
            self.ledger.record_outcome, receipt, object_state=object_state
        )
        if stored.outcome == "delivered":
            metrics.DELIVERED.inc()
        else:
            metrics.FAILED.labels(stored.reason_code.lower()).inc()
        await self._publish(stored, event)
        await self._cleanup(event, stored)

    async def _publish(self, receipt: Receipt, event: UploadCompleted) -> None:
        identity = ObjectIdentity()
        identity.CopyFrom(event.object)
        meta = new_meta(
            PRODUCER, receipt.trailer_id, event_id=f"{receipt.upload_id}-{receipt.outcome}"
        )
        key = event_key(receipt.trailer_id, receipt.study_instance_uid)
        if receipt.outcome == "delivered":
            message: ObjectDelivered | ObjectFailed = ObjectDelivered(
                meta=meta,
                object=identity,
                dataset_sha256=receipt.dataset_sha256,
                pacs_ae_title=self.pacs.ae_title,
                stored_transfer_syntax_uid=receipt.stored_transfer_syntax_uid,
                storage_committed=bool(receipt.storage_committed),
                delivered_at=timestamp(),
                duplicate=bool(receipt.duplicate),
                upload_id=receipt.upload_id,
            )
            if event.HasField("received_at"):  # the gateway's time, never the upload's
                message.received_at.CopyFrom(event.received_at)
            name = topics.CENTRAL_OBJECT_DELIVERED
        else:
            message = ObjectFailed(
                meta=meta,
                object=identity,
                dataset_sha256=receipt.dataset_sha256,
                reason_code=FailureReason.Value("FAILURE_REASON_" + receipt.reason_code),
                reason=receipt.reason,
                stage=receipt.stage,
                dicom_status=receipt.dicom_status,
                permanent=bool(receipt.permanent),
                failed_at=timestamp(),
                upload_id=receipt.upload_id,
            )
            name = topics.CENTRAL_OBJECT_FAILED
        try:
            await self.producer.publish(name, key, message)
        except KafkaError as exc:
            raise DependencyUnavailable(f"kafka: {type(exc).__name__}") from None

    async def _cleanup(self, event: UploadCompleted, receipt: Receipt) -> None:
        """Delivered (incl. duplicates): the sealed upload is no longer needed."""
        if receipt.outcome != "delivered" or self.keep_delivered:
            return
        await asyncio.to_thread(self.uploads.delete, event.meta.trailer_id, event.upload_id)

    def _keep_conflict(self, out: Path, event: UploadCompleted) -> str:
        directory = self.conflict_dir / event.object.sop_instance_uid
        directory.mkdir(parents=True, exist_ok=True)
        dest = directory / f"{event.dataset_sha256}.dcm"
        if out.exists():
            shutil.move(out, dest)
            fsync_dir(directory)
        return str(dest.relative_to(self.uploads.root))
