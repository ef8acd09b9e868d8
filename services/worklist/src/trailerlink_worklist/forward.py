"""Back upstream: demographic corrections and procedure step status, in order.

Both are Kafka handlers for a :class:`~trailerlink_events.kafka.ConsumerRunner`: the
offset is committed only after upstream acknowledged, and while upstream cannot be
reached the handler raises ``DependencyUnavailable`` so the record is retried without
limit and nothing behind it overtakes it. An upstream that refuses a message outright
(HL7 AR, a DICOM failure status) dead-letters it with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from datetime import UTC, datetime

from hl7.mllp import open_hl7_connection
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]  # made at import
from trailerlink_events import messages as m
from trailerlink_events.kafka import Delivery, DependencyUnavailable, PermanentError

from trailerlink_worklist import hl7msg, metrics, statuses
from trailerlink_worklist.cache import Cache
from trailerlink_worklist.mpps import FINAL, MppsStore
from trailerlink_worklist.settings import WorklistSettings

log = logging.getLogger(__name__)


class UpstreamRefused(Exception):
    """Upstream answered, and said no (retried a few times, then dead-lettered)."""


class Hl7Sender:
    """Sends one HL7 message over MLLP and waits for its acknowledgement."""

    def __init__(
        self, host: str, port: int, timeout_seconds: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_seconds = timeout_seconds
        self.tls = tls

    async def send(self, message: str) -> None:
        """Returns on AA/CA. Raises ``DependencyUnavailable`` when upstream cannot be
        reached or does not answer in time, :class:`PermanentError` on AR, and
        :class:`UpstreamRefused` on AE."""
        try:
            reader, writer = await asyncio.wait_for(
                open_hl7_connection(self.host, self.port, ssl=self.tls), self.timeout_seconds
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise DependencyUnavailable(f"HL7 upstream unreachable: {type(exc).__name__}") from None
        try:
            writer.writeblock(message.encode("utf-8"))
            await writer.drain()
            reply = await asyncio.wait_for(reader.readblock(), self.timeout_seconds)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise DependencyUnavailable(
                f"HL7 upstream did not answer: {type(exc).__name__}"
            ) from None
        finally:
            writer.close()
        code, text = hl7msg.ack_code(reply.decode("utf-8", "replace"))
        if code in ("AA", "CA"):
            return
        if code in ("AR", "CR"):
            raise PermanentError(f"upstream rejected the message ({code}): {text[:80]}")
        raise UpstreamRefused(f"upstream could not apply the message ({code}): {text[:80]}")


class CorrectionForwarder:
    """DemographicsCorrection -> HL7 ADT^A08 (and ADT^A47 when the NHS number changed)."""

    def __init__(self, settings: WorklistSettings, sender: Hl7Sender) -> None:
        self.settings = settings
        self.sender = sender

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, m.DemographicsCorrection)
        s = self.settings
        if event.meta.trailer_id != s.trailer_id:
            return  # another trailer's correction (a shared broker): not ours to send
        corrected_at = (
            event.corrected_at.ToDatetime(tzinfo=UTC)
            if event.HasField("corrected_at")
            else datetime.now(UTC)
        )
        common = {
            "application": s.hl7_application,
            "facility": s.trailer_id,
            "receiver": s.upstream_hl7_facility,
            "receiver_facility": "",
        }
        try:
            if any(
                (
                    event.corrected_family_name,
                    event.corrected_given_names,
                    event.corrected_birth_date,
                    event.corrected_sex,
                )
            ):
                await self.sender.send(
                    hl7msg.adt_a08(
                        control_id=f"{event.correction_id}-A08",
                        **common,
                        patient_id=event.patient_id,
                        issuer=event.patient_id_issuer,
                        family=event.corrected_family_name,
                        given=event.corrected_given_names,
                        birth_date=event.corrected_birth_date,
                        sex=event.corrected_sex,
                        operator=event.corrected_by,
                        corrected_at=corrected_at,
                        correction_id=event.correction_id,
                        accession=event.accession_number,
                        sps_id=event.scheduled_procedure_step_id,
                        reason=event.reason,
                    )
                )
            if event.corrected_patient_id and event.corrected_patient_id != event.patient_id:
                await self.sender.send(
                    hl7msg.adt_a47(
                        control_id=f"{event.correction_id}-A47",
                        **common,
                        old_id=event.patient_id,
                        new_id=event.corrected_patient_id,
                        issuer=event.patient_id_issuer or "NHS",
                        operator=event.corrected_by,
                        corrected_at=corrected_at,
                    )
                )
        except DependencyUnavailable:
            metrics.UPSTREAM_DELIVERIES.labels("correction", "unavailable").inc()
            raise
        except Exception:
            metrics.UPSTREAM_DELIVERIES.labels("correction", "refused").inc()
            raise
        metrics.UPSTREAM_DELIVERIES.labels("correction", "delivered").inc()
        log.info("correction delivered upstream", extra={"correction_id": event.correction_id})


class StatusForwarder:
    """ProcedureStepUpdated -> the Trust, as DICOM MPPS (N-CREATE/N-SET) or HL7 ORM^O01."""

    def __init__(
        self,
        settings: WorklistSettings,
        cache: Cache,
        mpps: MppsStore,
        hl7_sender: Hl7Sender | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.mpps = mpps
        self.hl7_sender = hl7_sender
        self._lock = threading.Lock()

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, m.ProcedureStepUpdated)
        if event.meta.trailer_id != self.settings.trailer_id:
            return  # another trailer's step (a shared broker): not ours to report
        try:
            if self.settings.status_route == "dicom_mpps":
                await asyncio.to_thread(self._forward_dicom, event.mpps_sop_instance_uid)
            elif self.settings.status_route == "hl7":
                await self._forward_hl7(event)
        except DependencyUnavailable:
            metrics.UPSTREAM_DELIVERIES.labels("procedure_step", "unavailable").inc()
            raise
        except Exception:
            metrics.UPSTREAM_DELIVERIES.labels("procedure_step", "refused").inc()
            raise
        metrics.UPSTREAM_DELIVERIES.labels("procedure_step", "delivered").inc()

    # --- DICOM MPPS SCU ------------------------------------------------------------------
    def _forward_dicom(self, uid: str) -> None:
        """Bring the Trust's copy of MPPS ``uid`` to our state (idempotent: what was sent
        is recorded, so a replayed event sends nothing twice)."""
        with self._lock:
            record = self.mpps.get(uid)
            if record is None:
                log.warning(
                    "MPPS no longer in the cache; nothing to forward", extra={"mpps_uid": uid}
                )
                return
            s = self.settings
            ae = AE(ae_title=s.dicom_ae_title)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.upstream_timeout_seconds
            ae.connection_timeout = s.upstream_timeout_seconds
            ae.add_requested_context(ModalityPerformedProcedureStep)
            assoc = ae.associate(
                s.upstream_mpps_host, s.upstream_mpps_port, ae_title=s.upstream_mpps_ae_title
            )
            if not assoc.is_established:
                raise DependencyUnavailable("Trust MPPS SCP not reachable")
            try:
                state = record.upstream_state
                if state == "none":
                    status, _ = assoc.send_n_create(
                        record.create_attrs, ModalityPerformedProcedureStep, uid
                    )
                    self._check(status, allow=(statuses.DUPLICATE_SOP_INSTANCE,))
                    self.mpps.set_upstream_state(uid, "created")
                    state = "created"
                if record.status in FINAL and state != "final":
                    status, _ = assoc.send_n_set(
                        _final_modifications(record.attrs), ModalityPerformedProcedureStep, uid
                    )
                    self._check(status, allow=())
                    self.mpps.set_upstream_state(uid, "final")
            finally:
                if assoc.is_established:
                    assoc.release()
        log.info("MPPS forwarded upstream", extra={"mpps_uid": uid})

    @staticmethod
    def _check(status: Dataset | None, allow: tuple[int, ...]) -> None:
        if not status or "Status" not in status:
            raise DependencyUnavailable("Trust MPPS SCP did not answer")
        code = int(status.Status)
        if code == statuses.SUCCESS or code in allow or 0xB000 <= code <= 0xBFFF:
            return
        if (
            code == statuses.PROCESSING_FAILURE
            and status.get("ErrorID") == statuses.ERROR_ID_MAY_NO_LONGER_BE_UPDATED
        ):
            return  # the Trust already has it final: nothing left to say
        raise PermanentError(f"Trust MPPS SCP refused: {statuses.name(code)}")

    # --- HL7 ORM ---------------------------------------------------------------------------
    async def _forward_hl7(self, event: m.ProcedureStepUpdated) -> None:
        assert self.hl7_sender is not None
        status = {1: "IN PROGRESS", 2: "COMPLETED", 3: "DISCONTINUED"}.get(int(event.status))
        if status is None:
            raise PermanentError("procedure step event without a status")
        cached = self.cache.find_step(
            accession_number=event.accession_number,
            sps_id=event.scheduled_procedure_step_id,
            study_instance_uid=event.study_instance_uid,
        )
        step = cached.step if cached else None

        def ts(field: str) -> str:
            return (
                event.__getattribute__(field).ToDatetime(tzinfo=UTC).strftime("%Y%m%d%H%M%S")
                if event.HasField(field)
                else ""
            )

        s = self.settings
        await self.hl7_sender.send(
            hl7msg.orm_status(
                control_id=f"{event.meta.event_id}",
                application=s.hl7_application,
                facility=s.trailer_id,
                receiver=s.upstream_hl7_facility,
                receiver_facility="",
                patient_id=step.patient_id if step else "",
                issuer=step.issuer_of_patient_id if step else "",
                accession=event.accession_number,
                requested_procedure_id=step.requested_procedure_id if step else "",
                sps_id=event.scheduled_procedure_step_id,
                status=status,
                modality=event.modality,
                started=ts("started_at"),
                ended=ts("ended_at"),
            )
        )


# Attributes of a final N-SET (PS3.4 Table F.7.2-1 "N-SET" column, the ones we keep).
_FINAL_KEYWORDS = (
    "PerformedProcedureStepStatus",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedProcedureStepDescription",
    "PerformedSeriesSequence",
    "PerformedProcedureStepDiscontinuationReasonCodeSequence",
    "ProcedureCodeSequence",
    "PerformedProtocolCodeSequence",
)


def _final_modifications(attrs: Dataset) -> Dataset:
    mods = Dataset()
    for keyword in _FINAL_KEYWORDS:
        if keyword in attrs:
            mods[keyword] = attrs[keyword]
    return mods
