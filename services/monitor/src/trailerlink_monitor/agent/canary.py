"""The synthetic canary (agent mode): health proven by traffic, not by "process is up".

On a schedule the agent builds a small synthetic mammogram for a clearly marked test
patient (PatientName ``ZZTEST^CANARY``, PatientID ``TLCANARY-<trailer>``, fresh
Study/Series/SOP UIDs, generated pixels — never real data), C-STOREs it to the trailer's
gateway under its own calling AE title and waits, with a deadline, for the uplink's
ObjectDelivered for that SOP Instance UID on the trailer's Kafka. So one pass proves
gateway -> codec -> uplink -> ingest -> PACS. The ingest sends objects whose PatientID
starts with ``TLCANARY-`` to the PACS test destination (its ``PACS_CANARY_AE_TITLE``).

The outcome is exported as metrics and carried in the heartbeat, so the fleet monitor
shows it per trailer and the "canary failing" alert fires on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events.kafka import Delivery
from trailerlink_events.messages import ObjectDelivered, ObjectFailed

from trailerlink_monitor import metrics

log = logging.getLogger(__name__)

# The ingest routes on this prefix (trailerlink_ingest.pacs.CANARY_PATIENT_ID_PREFIX):
# change both or neither.
CANARY_PATIENT_ID_PREFIX = "TLCANARY-"
CANARY_PATIENT_NAME = "ZZTEST^CANARY"
MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
_SIDE = 64  # a 64 x 64 16-bit image: 8 KiB of pixels, cheap on a slow link


@dataclass(frozen=True)
class CanaryTarget:
    """Where the canary enters the chain: the trailer gateway's DICOM port."""

    host: str
    port: int
    called_ae_title: str
    calling_ae_title: str
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class CanaryResult:
    """One canary run: passed or not, how long, when, and (failures) which step."""

    ok: bool
    seconds: float
    at: float  # unix time the run started
    outcome: str  # passed | refused | timeout | failed
    sop_instance_uid: str


def build_canary(trailer_id: str) -> Dataset:
    """A new synthetic MG object for the canary test patient (fresh UIDs each call)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    now = time.strftime("%Y%m%d %H%M%S", time.gmtime()).split()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.ContentDate = now[0]
    ds.StudyTime = ds.ContentTime = now[1]
    ds.AccessionNumber = ""
    ds.Modality = "MG"
    ds.Manufacturer = "trailerlink canary"
    ds.StudyDescription = "TRAILERLINK SYNTHETIC CANARY - NOT A PATIENT"
    ds.PatientName = CANARY_PATIENT_NAME
    # LO is at most 64 characters; the prefix is what the ingest routes on.
    ds.PatientID = (CANARY_PATIENT_ID_PREFIX + trailer_id)[:64]
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyID = "CANARY"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = _SIDE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    # A diagonal ramp: recognisably synthetic, compresses like an image.
    ds.PixelData = b"".join(
        ((r * 37 + c * 11) % 4096).to_bytes(2, "little") for r in range(_SIDE) for c in range(_SIDE)
    )
    return ds


def c_store(ds: Dataset, target: CanaryTarget) -> int:
    """C-STORE ``ds`` to the gateway; the DIMSE status, or -1 when no association.
    Blocking: call from a thread."""
    from pynetdicom import AE

    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    ae.connection_timeout = min(10.0, target.timeout_seconds)
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae_title)
    if not assoc.is_established:
        return -1
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if "Status" in status else -1
    finally:
        assoc.release()


class Canary:
    """Runs the canary every ``interval`` seconds; :meth:`handle` is the Kafka handler
    of the trailer's object-delivered / object-failed topics."""

    def __init__(
        self, trailer_id: str, target: CanaryTarget, interval: float, deadline: float
    ) -> None:
        self.trailer_id = trailer_id
        self.target = target
        self.interval = interval
        self.deadline = deadline
        self.last: CanaryResult | None = None
        self._pending: dict[str, asyncio.Future[ObjectDelivered | ObjectFailed]] = {}

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, ObjectDelivered | ObjectFailed):
            return
        waiting = self._pending.get(event.object.sop_instance_uid)
        if waiting is not None and not waiting.done():
            waiting.set_result(event)

    async def run_once(self) -> CanaryResult:
        ds = build_canary(self.trailer_id)
        uid = str(ds.SOPInstanceUID)
        started_at, started = time.time(), time.monotonic()
        # Registered before the store, so an early ObjectDelivered cannot be missed.
        waiting = asyncio.get_running_loop().create_future()
        self._pending[uid] = waiting
        try:
            status = await asyncio.to_thread(c_store, ds, self.target)
            if status != 0:
                outcome = "refused"
                log.warning(
                    "canary not accepted by the gateway",
                    extra={"status": status, "sop_instance_uid": uid},
                )
            else:
                left = self.deadline - (time.monotonic() - started)
                try:
                    event = await asyncio.wait_for(waiting, max(left, 0.0))
                except TimeoutError:
                    outcome = "timeout"
                    log.warning(
                        "canary not delivered within the deadline",
                        extra={"deadline_seconds": self.deadline, "sop_instance_uid": uid},
                    )
                else:
                    outcome = "passed" if isinstance(event, ObjectDelivered) else "failed"
                    if outcome == "failed":
                        log.warning(
                            "canary failed on the way",
                            extra={"stage": event.stage, "sop_instance_uid": uid},
                        )
        except Exception as exc:  # gateway unreachable, DICOM error: the canary fails
            outcome = "refused"
            log.warning(
                "canary could not be sent",
                extra={"error": type(exc).__name__, "sop_instance_uid": uid},
            )
        finally:
            self._pending.pop(uid, None)
        result = CanaryResult(
            outcome == "passed", time.monotonic() - started, started_at, outcome, uid
        )
        self._export(result)
        return result

    def _export(self, result: CanaryResult) -> None:
        self.last = result
        metrics.AGENT_CANARY_RUNS.labels(result.outcome).inc()
        metrics.AGENT_CANARY_OK.set(1 if result.ok else 0)
        metrics.AGENT_CANARY_LAST_RUN.set(result.at)
        if result.ok:
            metrics.AGENT_CANARY_LAST_SUCCESS.set(time.time())
            metrics.AGENT_CANARY_SECONDS.observe(result.seconds)
            log.info(
                "canary delivered",
                extra={
                    "seconds": round(result.seconds, 3),
                    "sop_instance_uid": result.sop_instance_uid,
                },
            )

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            once = asyncio.ensure_future(self.run_once())
            # A run may wait up to the deadline: shutting down must not wait for it.
            await asyncio.wait({once, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not once.done():
                once.cancel()
                return
            await sleep_or_stop(stop, self.interval)
