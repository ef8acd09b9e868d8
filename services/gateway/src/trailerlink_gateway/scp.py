"""The DICOM edge: a pynetdicom Application Entity whose handlers translate DICOM into
the gateway's operations (intake, committer) and their results back into statuses.

Handlers run in pynetdicom's association threads; everything they call is blocking
and thread-safe. Nothing here decides anything about storage or commitment.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import weakref
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION

# pynetdicom creates its SOP class names at import time, out of a type checker's sight.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)
from trailerlink_dicomnet import (
    BoundedAssociationServer,
    route_datasets,
    sink_of,
    start_bounded_server,
    unroute_datasets,
)
from trailerlink_dicomnet.refusals import refusal_handler
from trailerlink_spool.layout import is_valid_uid

from trailerlink_gateway import metrics, receive
from trailerlink_gateway.access import PeerPolicy
from trailerlink_gateway.commitment import CommitItem, CommitRequest, Verdict
from trailerlink_gateway.committer import Committer
from trailerlink_gateway.intake import Intake
from trailerlink_gateway.settings import GatewaySettings
from trailerlink_gateway.sop_classes import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from trailerlink_gateway.statuses import (
    CANNOT_UNDERSTAND,
    COMMIT_ACTION_REQUEST,
    INVALID_ARGUMENT_VALUE,
    MISSING_ATTRIBUTE_VALUE,
    NO_SUCH_ACTION,
    NO_SUCH_SOP_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.gateway")

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
_ERROR_COMMENT_MAX = 64  # (0000,0902) is LO
# pynetdicom presentation context results (PS3.8 9.3.3.2)
_CONTEXT_REJECT_REASONS = {
    0x01: "context_rejected_by_user",
    0x02: "context_rejected_no_reason",
    0x03: "abstract_syntax_not_supported",
    0x04: "transfer_syntax_not_supported",
}


def server_tls_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """TLS for the DICOM port; with ``ca``, peers must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def commitment_report(request: CommitRequest, verdict: Verdict) -> Dataset:
    """The Event Information of a storage commitment N-EVENT-REPORT."""
    ds = Dataset()
    ds.TransactionUID = request.transaction_uid
    if verdict.committed:
        ds.ReferencedSOPSequence = [_ref(item) for item in verdict.committed]
    if verdict.failed:
        failed = []
        for item, reason in verdict.failed:
            ref = _ref(item)
            ref.FailureReason = int(reason)
            failed.append(ref)
        ds.FailedSOPSequence = failed
    return ds


def _ref(item: CommitItem) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = item.sop_class_uid
    ref.ReferencedSOPInstanceUID = item.sop_instance_uid
    return ref


class DicomReporter:
    """Sends storage commitment N-EVENT-REPORTs: on the requesting association while it
    is open (unless configured otherwise), else on a new association to the modality's
    configured address, proposing the SCP role for the Push Model."""

    def __init__(
        self,
        ae_title: str,
        peers: dict[str, tuple[str, int]],
        same_association: bool = True,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.ae_title = ae_title
        self.peers = peers
        self.same_association = same_association
        self.timeout_seconds = timeout_seconds
        self._live: weakref.WeakValueDictionary[str, Association] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def remember(self, transaction_uid: str, assoc: Association) -> None:
        with self._lock:
            self._live[transaction_uid] = assoc

    def send(self, request: CommitRequest, verdict: Verdict) -> bool:
        report = commitment_report(request, verdict)
        with self._lock:
            assoc = self._live.get(request.transaction_uid)
        if self.same_association and assoc is not None and assoc.is_established:
            if self._send_on(assoc, report, verdict.event_type):
                return True
        peer = self.peers.get(request.calling_ae_title)
        if peer is None:
            log.warning(
                "no commitment peer configured for this AE title; report waits",
                extra={
                    "calling_ae": request.calling_ae_title,
                    "transaction_uid": request.transaction_uid,
                },
            )
            return False
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_seconds
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = ae.associate(peer[0], peer[1], ae_title=request.calling_ae_title, ext_neg=[role])
        if not assoc.is_established:
            log.warning(
                "modality did not accept the association for its commitment report",
                extra={"calling_ae": request.calling_ae_title},
            )
            return False
        try:
            return self._send_on(assoc, report, verdict.event_type)
        finally:
            assoc.release()

    @staticmethod
    def _send_on(assoc: Association, report: Dataset, event_type: int) -> bool:
        try:
            status, _reply = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        except (RuntimeError, ValueError) as exc:
            log.warning("N-EVENT-REPORT not sent", extra={"error": type(exc).__name__})
            return False
        return bool(status) and int(status.get("Status", -1)) == SUCCESS


class DicomGateway:
    """The pynetdicom AE: listener, access control and the DIMSE handlers."""

    def __init__(
        self,
        settings: GatewaySettings,
        intake: Intake,
        committer: Committer,
        reporter: DicomReporter,
        policy: PeerPolicy,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.committer = committer
        self.reporter = reporter
        self.policy = policy
        self.tls = tls
        self.ae = self._build_ae()
        self._server: BoundedAssociationServer | None = None
        self._on_refusal = refusal_handler(metrics.REJECTS, log)
        self._open_assocs: set[int] = set()
        self._assoc_lock = threading.Lock()

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.dicom_ae_title)
        ae.network_timeout = s.dicom_network_timeout_seconds
        ae.acse_timeout = ae.dimse_timeout = 30
        # Access control is ours (PeerPolicy) so that every refusal is counted.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        ae.add_supported_context(Verification)
        for uid in STORAGE_SOP_CLASSES.values():
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        ae.add_supported_context(StorageCommitmentPushModel)
        route_datasets(ae, receive.sink_factory(self.intake.begin))
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_ended),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_ACTION, self._on_n_action),
        ]

    # --- running -----------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        self._server = start_bounded_server(
            self.ae,
            (s.dicom_host, s.dicom_port),
            s.receive_limits(),
            self._on_refusal,
            ssl_context=self.tls,
            evt_handlers=self.handlers(),
        )
        log.info(
            "DICOM listener started",
            extra={
                "ae_title": s.dicom_ae_title,
                "port": s.dicom_port,
                "tls": self.tls is not None,
                "max_pdu_bytes": s.dicom_max_pdu_bytes,
            },
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        unroute_datasets(self.ae)

    def is_serving(self) -> bool:
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() >= 0

    async def run(self, stop: asyncio.Event) -> None:
        """Service task: serve DICOM until ``stop``; in-flight stores finish first."""
        await asyncio.to_thread(self.start)
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.stop)

    async def readiness(self) -> None:
        if not self.is_serving():
            raise RuntimeError("DICOM listener is not serving")

    # --- association events --------------------------------------------------------
    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        assert primitive is not None  # EVT_REQUESTED follows the A-ASSOCIATE-RQ it holds
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        reject = self.policy.check(calling, called, str(assoc.requestor.address))
        if reject is None:
            return
        metrics.REJECTS.labels(reject.metric).inc()
        log.warning(
            "association rejected",
            extra={
                "reason": reject.metric,
                "calling_ae": calling,
                "called_ae": called,
                "peer_address": str(assoc.requestor.address),
            },
        )
        assoc.acse.send_reject(*reject.value)
        # As pynetdicom does for its own rejections: wait until the A-ASSOCIATE-RJ is
        # sent and the peer has closed, then end the association thread.
        assoc.kill()

    def _on_established(self, event: evt.Event) -> None:
        assoc = event.assoc
        metrics.ASSOCIATIONS.inc()
        with self._assoc_lock:
            self._open_assocs.add(id(assoc))
            metrics.ASSOCIATIONS_ACTIVE.set(len(self._open_assocs))
        rejected: dict[str, set[str]] = {}
        for cx in assoc.rejected_contexts:
            reason = _CONTEXT_REJECT_REASONS.get(int(cx.result or 0), "context_rejected")
            metrics.REJECTS.labels(reason).inc()
            rejected.setdefault(reason, set()).add(str(cx.abstract_syntax))
        if rejected:
            # Modalities often propose every class they know: one line per association.
            log.info(
                "presentation contexts rejected",
                extra={
                    "calling_ae": str(assoc.requestor.ae_title).strip(),
                    **{reason: sorted(uids)[:20] for reason, uids in rejected.items()},
                },
            )

    def _on_rejected(self, event: evt.Event) -> None:
        # Only pynetdicom's own limit reaches here; our refusals are counted above.
        metrics.REJECTS.labels("too_many_associations").inc()

    def _on_ended(self, event: evt.Event) -> None:
        dropped = receive.abandon_open(event.assoc)
        if dropped:
            log.warning(
                "association ended during a store; nothing kept", extra={"stores_dropped": dropped}
            )
        with self._assoc_lock:
            self._open_assocs.discard(id(event.assoc))
            metrics.ASSOCIATIONS_ACTIVE.set(len(self._open_assocs))

    # --- DIMSE services ------------------------------------------------------------
    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> Dataset:
        sink = sink_of(event.request)
        rsp = Dataset()
        if not isinstance(sink, receive.SpoolSink):
            rsp.Status = CANNOT_UNDERSTAND
            rsp.ErrorComment = "no data set received"
            metrics.REJECTS.labels("no_dataset").inc()
            return rsp
        # The root of the image's trace: the outbox row written inside it carries its
        # context, so every later hop (codec, uplink, ingest, PACS) continues this trace.
        request = sink.incoming.request if sink.incoming is not None else None
        with tracer.start_as_current_span(
            "dicom.c-store",
            kind=SpanKind.SERVER,
            start_time=sink.opened_ns,
            attributes={
                "dicom.sop_instance_uid": request.sop_instance_uid if request else "",
                "dicom.sop_class_uid": request.sop_class_uid if request else "",
                "dicom.calling_ae_title": request.calling_ae_title if request else "",
            },
        ) as span:
            result = sink.finish()
            span.set_attributes(
                {"dicom.status": result.status, "trailerlink.outcome": result.outcome}
            )
            if not result.success:
                span.set_status(Status(StatusCode.ERROR, result.outcome))
        rsp.Status = result.status
        if result.comment and not result.success:
            rsp.ErrorComment = result.comment[:_ERROR_COMMENT_MAX]
        return rsp

    def _on_n_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request = event.request
        assert isinstance(request, N_ACTION)  # bound to EVT_N_ACTION only
        if str(request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return NO_SUCH_SOP_INSTANCE, None
        if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
            return NO_SUCH_SOP_INSTANCE, None
        if event.action_type != COMMIT_ACTION_REQUEST:
            return NO_SUCH_ACTION, None
        try:
            info = event.action_information
            transaction_uid = str(info.get("TransactionUID", "") or "")
            refs = info.get("ReferencedSOPSequence") or []
            items = [
                CommitItem(str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID))
                for r in refs
            ]
        except Exception as exc:
            log.warning("N-ACTION information does not parse", extra={"error": type(exc).__name__})
            return INVALID_ARGUMENT_VALUE, None
        if not transaction_uid or not items:
            return MISSING_ATTRIBUTE_VALUE, None
        if not is_valid_uid(transaction_uid) or not all(
            is_valid_uid(i.sop_instance_uid) and is_valid_uid(i.sop_class_uid) for i in items
        ):
            return INVALID_ARGUMENT_VALUE, None
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            self.committer.request(transaction_uid, calling, items)
        except Exception as exc:
            log.error(
                "storage commitment request not recorded", extra={"error": type(exc).__name__}
            )
            return PROCESSING_FAILURE, None
        self.reporter.remember(transaction_uid, event.assoc)
        return SUCCESS, None
