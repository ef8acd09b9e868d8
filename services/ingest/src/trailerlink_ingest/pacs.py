"""Forward a verified Part 10 file to the PACS with a pynetdicom C-STORE SCU.

The dataset goes byte for byte as received (pynetdicom's chunked path mode sends the
file's bytes after group 0002 unchanged) in its original transfer syntax. If the PACS
does not accept that syntax and fallback is allowed, the same pixels go in a lossless
syntax it does accept (Explicit/Implicit VR Little Endian, decompressing a lossless
compressed original first) and the receipt records the syntax used.

Outcomes: :class:`StoreResult` (success or warning status), :class:`PacsUnavailable`
(PACS down, busy 0xA7xx, no answer: retry) or :class:`PacsRefused` (a failure status or
no usable presentation context: permanent). Blocking: call from a thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, build_context

from trailerlink_ingest.metrics import LOSSLESS_FALLBACKS, PACS_STORE_FAILURES, PACS_STORE_SECONDS

log = logging.getLogger(__name__)

# Send datasets from files without decoding them: byte-identical, constant memory.
_config.STORE_SEND_CHUNKED_DATASET = True

SUCCESS = 0x0000
WARNING_COERCION = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DOES_NOT_MATCH_SOP_CLASS = 0xB007
SUCCESS_STATUSES = {
    SUCCESS,
    WARNING_COERCION,
    WARNING_ELEMENTS_DISCARDED,
    WARNING_DOES_NOT_MATCH_SOP_CLASS,
}
OUT_OF_RESOURCES_FIRST = 0xA700
OUT_OF_RESOURCES_LAST = 0xA7FF
RESOURCE_LIMITATION = 0x0213
# PatientID prefix of the monitor agent's synthetic canary (trailerlink_monitor.agent.canary).
CANARY_PATIENT_ID_PREFIX = "TLCANARY-"

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Lossless syntaxes pydicom can decompress (with the image plug-ins installed).
_LOSSLESS_COMPRESSED = {
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.202",
}


class PacsUnavailable(Exception):
    """The PACS cannot take the object now (down, busy, aborted): retry later."""


class PacsRefused(Exception):
    """The PACS refused the object for good; ``status`` is its DICOM status (0 if none)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StoreResult:
    status: int
    transfer_syntax_uid: str
    fallback: bool
    seconds: float


@dataclass(frozen=True)
class PacsTarget:
    host: str
    port: int
    ae_title: str
    calling_ae_title: str = "TRAILERLINK"
    timeout_seconds: float = 60.0
    max_pdu: int = 131072
    allow_lossless_fallback: bool = True
    canary_ae_title: str = ""  # the synthetic canary's PACS test destination; "" = ae_title


def called_ae_title(path: Path, target: PacsTarget) -> str:
    """The AE title to store ``path`` at: the canary AE for the monitor's synthetic
    canary (PatientID prefix, see trailerlink_monitor.agent.canary), else the PACS's."""
    if not target.canary_ae_title:
        return target.ae_title
    try:
        patient_id = str(
            dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID", "")
        )
    except (OSError, ValueError):  # verified before; unreadable here: the normal route
        return target.ae_title
    return (
        target.canary_ae_title
        if patient_id.startswith(CANARY_PATIENT_ID_PREFIX)
        else target.ae_title
    )


def _is_transient(status: int) -> bool:
    return (
        OUT_OF_RESOURCES_FIRST <= status <= OUT_OF_RESOURCES_LAST or status == RESOURCE_LIMITATION
    )


def _fallback_syntaxes(original: str) -> list[str | UID]:
    if (
        original in _UNCOMPRESSED
        or original == "1.2.840.10008.1.2.2"
        or original in _LOSSLESS_COMPRESSED
    ):
        return [ts for ts in _UNCOMPRESSED if ts != original]
    return []  # lossy or unknown: no fallback can be lossless


def store(
    path: Path, sop_class_uid: str, transfer_syntax_uid: str, target: PacsTarget
) -> StoreResult:
    """C-STORE the Part 10 file at ``path``; see the module docstring for outcomes."""
    started = time.perf_counter()
    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    ae.connection_timeout = min(10.0, target.timeout_seconds)
    ae.maximum_pdu_size = target.max_pdu
    contexts = [build_context(sop_class_uid, [transfer_syntax_uid])]
    fallbacks = _fallback_syntaxes(transfer_syntax_uid) if target.allow_lossless_fallback else []
    if fallbacks:
        contexts.append(build_context(sop_class_uid, fallbacks))
    ae.requested_contexts = contexts
    assoc = ae.associate(target.host, target.port, ae_title=called_ae_title(path, target))
    if not assoc.is_established:
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            # The PACS answered and accepted none of our contexts (pynetdicom then aborts):
            # it will not take this SOP class in any syntax we may send. Permanent.
            PACS_STORE_FAILURES.labels("no_context").inc()
            raise PacsRefused(
                0,
                "PACS accepted no presentation context for this object "
                "in its transfer syntax or a lossless alternative",
            )
        PACS_STORE_FAILURES.labels("association").inc()
        reason = (
            "association rejected"
            if assoc.is_rejected
            else "association aborted"
            if assoc.is_aborted
            else "PACS not reachable"
        )
        raise PacsUnavailable(reason)
    try:
        accepted = {
            str(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class_uid
        }
        if transfer_syntax_uid in accepted:
            used, fallback = transfer_syntax_uid, False
            status_ds = assoc.send_c_store(path)
        else:
            usable = [ts for ts in fallbacks if ts in accepted]
            if not usable:
                PACS_STORE_FAILURES.labels("no_context").inc()
                raise PacsRefused(
                    0,
                    "PACS accepted no presentation context for this object "
                    "in its transfer syntax or a lossless alternative",
                )
            converted = _converted(path, transfer_syntax_uid)
            current = str(converted.file_meta.TransferSyntaxUID)
            used, fallback = (current if current in usable else str(usable[0])), True
            # pynetdicom re-encodes between the uncompressed little-endian syntaxes itself.
            status_ds = assoc.send_c_store(converted)
            LOSSLESS_FALLBACKS.inc()
            log.warning(
                "stored in a lossless fallback transfer syntax",
                extra={"from_ts": transfer_syntax_uid, "to_ts": used},
            )
        if not status_ds or "Status" not in status_ds:
            PACS_STORE_FAILURES.labels("no_response").inc()
            raise PacsUnavailable("no C-STORE response (timeout or abort)")
        status = int(status_ds.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    seconds = time.perf_counter() - started
    if status in SUCCESS_STATUSES:
        PACS_STORE_SECONDS.observe(seconds)
        return StoreResult(status, used, fallback, seconds)
    if _is_transient(status):
        PACS_STORE_FAILURES.labels("busy").inc()
        raise PacsUnavailable(f"PACS busy, status 0x{status:04X}")
    PACS_STORE_FAILURES.labels("refused").inc()
    raise PacsRefused(status, f"PACS refused the object, status 0x{status:04X}")


def _converted(path: Path, original: str) -> Dataset:
    ds = dcmread(path)
    if original in _LOSSLESS_COMPRESSED:
        ds.decompress()  # lossless by the original's definition; now Explicit VR LE
    return ds


def echo(target: PacsTarget) -> bool:
    """True when the PACS answers C-ECHO (for diagnostics, not readiness)."""
    ae = AE(ae_title=target.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_seconds
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == SUCCESS
    finally:
        assoc.release()
