"""The DICOM edge for the modality: MWL C-FIND and MPPS N-CREATE/N-SET/N-GET, plus C-ECHO.

Handlers translate DICOM into the worklist's operations (matching over the cache, the
MPPS store) and their outcomes back into statuses. They run in pynetdicom's
association threads; everything they call is thread-safe and quick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import N_CREATE, N_GET, N_SET

# pynetdicom creates its SOP class names at import time, out of a type checker's sight.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)
from trailerlink_dicomnet import BoundedAssociationServer, start_bounded_server
from trailerlink_dicomnet.encoding import disable_reuse, enable_reuse
from trailerlink_dicomnet.refusals import refusal_handler

from trailerlink_worklist import fastfind, metrics, statuses
from trailerlink_worklist.answers import (
    AnswerProfile,
    Answers,
    requested_charsets,
)
from trailerlink_worklist.cache import Cache
from trailerlink_worklist.matching import QueryError, compile_query
from trailerlink_worklist.mpps import MppsRefused, MppsStore
from trailerlink_worklist.settings import WorklistSettings

log = logging.getLogger(__name__)

# pynetdicom's "standard" handlers print every DIMSE message, identifiers included,
# at DEBUG: patient data, and a third of the C-FIND time. Ours log UIDs and counts.
_config.LOG_HANDLER_LEVEL = "none"
# Do not let pynetdicom print datasets it fails to decode.
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_REQUEST_IDENTIFIERS = False

_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


class WorklistScp:
    """The worklist's Application Entity."""

    def __init__(self, settings: WorklistSettings, cache: Cache, mpps: MppsStore) -> None:
        self.settings = settings
        self.cache = cache
        self.mpps = mpps
        sets = settings.ae_character_sets()
        upper = settings.uppercase_names_aes()
        self.answers = Answers(
            settings.dicom_default_character_set,
            profiles={ae: AnswerProfile(sets.get(ae), ae in upper) for ae in set(sets) | upper},
        )
        # pynetdicom logs a line per C-FIND response at INFO: 120 lines per refresh.
        logging.getLogger("pynetdicom.service_class").setLevel(logging.WARNING)
        self.ae = self._build_ae()
        self._server: BoundedAssociationServer | None = None

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.dicom_ae_title)
        ae.network_timeout = s.dicom_network_timeout_seconds
        ae.acse_timeout = ae.dimse_timeout = 30
        ae.require_called_aet = False
        ae.add_supported_context(Verification)
        ae.add_supported_context(ModalityWorklistInformationFind)
        ae.add_supported_context(ModalityPerformedProcedureStep)
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_ECHO, lambda _event: statuses.SUCCESS),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
            (evt.EVT_N_GET, self.on_n_get),
        ]

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Listen on the configured port (returns at once; associations run in threads)."""
        tls = self.settings.dicom_tls()
        enable_reuse(self.ae)
        self._server = start_bounded_server(
            self.ae,
            (self.settings.dicom_host, self.settings.dicom_port),
            self.settings.receive_limits(),
            refusal_handler(metrics.DICOM_REFUSALS, log),
            ssl_context=tls,
            evt_handlers=self.handlers(),
            dimse_factory=fastfind.FastFindDIMSE,
        )
        log.info(
            "DICOM MWL/MPPS listening",
            extra={
                "ae_title": self.settings.dicom_ae_title,
                "port": self.settings.dicom_port,
                "tls": tls is not None,
            },
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        disable_reuse(self.ae)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    # --- C-FIND ---------------------------------------------------------------------
    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        started = time.perf_counter()
        matched = 0

        def done(outcome: str) -> None:
            # Counted before the final status is yielded: pynetdicom does not resume a
            # handler after its final response.
            metrics.CFIND_REQUESTS.labels(outcome).inc()
            metrics.CFIND_SECONDS.observe(time.perf_counter() - started)
            metrics.CFIND_MATCHES.observe(matched)

        try:
            identifier = event.identifier
            query = compile_query(
                identifier,
                pn_case_sensitive=self.settings.pn_case_sensitive,
                combined_datetime=self.settings.combined_datetime_matching,
            )
            requested = requested_charsets(identifier)
            profile = self.answers.profile(str(event.assoc.requestor.ae_title))
        except (QueryError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("C-FIND identifier refused", extra={"error": type(exc).__name__})
            done("refused")
            yield statuses.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        try:
            records = self.cache.snapshot()
            for record in records:
                if event.is_cancelled:
                    done("cancelled")
                    yield statuses.CANCEL, None
                    return
                if query.matches(record):
                    matched += 1
                    yield statuses.PENDING, self.answers.answer(query, record, requested, profile)
        except Exception as exc:
            log.error("C-FIND failed", extra={"error": type(exc).__name__})
            done("failed")
            yield statuses.UNABLE_TO_PROCESS, None
            return
        done("success")
        yield statuses.SUCCESS, None

    # --- MPPS -----------------------------------------------------------------------
    def _mpps(
        self, operation: str, uid: str, work: Callable[[], Dataset]
    ) -> tuple[int | Dataset, Dataset | None]:
        """One MPPS request: ``work`` returns the reply; a refusal or a failure becomes
        its status. Counted by outcome and logged with the instance UID only."""
        label = operation.replace("-", "_").lower()
        try:
            reply = work()
        except MppsRefused as refused:
            metrics.MPPS_REQUESTS.labels(label, statuses.name(refused.status)).inc()
            log.warning(
                f"MPPS {operation} refused",
                extra={"mpps_uid": uid, "status": statuses.name(refused.status)},
            )
            return _refusal(refused), None
        except Exception as exc:
            metrics.MPPS_REQUESTS.labels(label, "processing_failure").inc()
            log.error(f"MPPS {operation} failed", extra={"error": type(exc).__name__})
            return statuses.PROCESSING_FAILURE, None
        metrics.MPPS_REQUESTS.labels(label, "success").inc()
        return statuses.SUCCESS, reply

    def on_n_create(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_CREATE)  # bound to EVT_N_CREATE only
        given = request.AffectedSOPInstanceUID
        uid = str(given) if given is not None else str(generate_uid(prefix=_UID_PREFIX))

        def work() -> Dataset:
            self.mpps.create(uid, event.attribute_list)
            reply = Dataset()
            if given is None:  # we assigned the UID: tell the modality
                reply.AffectedSOPInstanceUID = uid
            return reply

        return self._mpps("N-CREATE", uid, work)

    def on_n_set(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_SET)  # bound to EVT_N_SET only
        uid = str(request.RequestedSOPInstanceUID)

        def work() -> Dataset:
            mods = event.modification_list
            stored, _event = self.mpps.update(uid, mods)
            # The N-SET response carries the attributes that were set (PS3.4 F.7.2.2).
            reply = Dataset()
            for elem in mods:
                if elem.tag in stored:
                    reply[elem.tag] = stored[elem.tag]
            return reply

        return self._mpps("N-SET", uid, work)

    def on_n_get(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_GET)  # bound to EVT_N_GET only
        uid = str(request.RequestedSOPInstanceUID)

        def work() -> Dataset:
            listed = request.AttributeIdentifierList
            # pynetdicom gives a single tag as a bare tag, several as a list.
            tags = [
                int(t)
                for t in (
                    listed if isinstance(listed, list) else [] if listed is None else [listed]
                )
            ]
            if any(t >> 16 in (0x0000, 0x0002) for t in tags):
                raise MppsRefused(
                    statuses.ATTRIBUTE_LIST_ERROR,
                    "command or file meta attributes cannot be requested",
                )
            return self.mpps.attributes(uid, tags)

        return self._mpps("N-GET", uid, work)


def _refusal(refused: MppsRefused) -> Dataset:
    status = Dataset()
    status.Status = refused.status
    status.ErrorComment = refused.comment[:64]
    if refused.error_id is not None:
        status.ErrorID = refused.error_id
    return status
