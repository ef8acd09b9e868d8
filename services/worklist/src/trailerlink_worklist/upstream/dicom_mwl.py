"""Upstream adapter 1: poll the Trust's worklist broker with MWL C-FIND (we are the SCU).

Each poll asks for this trailer's steps (its station AE title, location and modality)
from today to the horizon, and only a poll that completes with Success replaces the
cache's window: a broker that fails half-way, or cannot be reached, changes nothing,
so the modality keeps being served from the cache.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from trailerlink_worklist import metrics, statuses
from trailerlink_worklist.model import Source, from_dataset
from trailerlink_worklist.settings import WorklistSettings
from trailerlink_worklist.upstream import LinkStatus
from trailerlink_worklist.worklist import Worklist

log = logging.getLogger(__name__)

ADAPTER = "dicom_mwl"


class UpstreamUnavailable(Exception):
    """The broker could not be asked, or did not finish answering."""


def worklist_query(settings: WorklistSettings, first: str, last: str) -> Dataset:
    """The C-FIND identifier for this trailer's steps from ``first`` to ``last``."""
    q = Dataset()
    q.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("AccessionNumber", "ReferringPhysicianName", "PatientName", "PatientID",
                    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "RequestedProcedureID", "RequestedProcedureDescription",
                    "RequestedProcedurePriority", "AdmissionID"):
        setattr(q, keyword, "")
    sps = Dataset()
    stations = settings.station_ae_list()
    sps.ScheduledStationAETitle = stations[0] if len(stations) == 1 else ""
    sps.Modality = settings.modality
    sps.ScheduledProcedureStepStartDate = first if first == last else f"{first}-{last}"
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepLocation = settings.site_code
    for keyword in ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
                    "ScheduledStationName", "ScheduledPerformingPhysicianName"):
        setattr(sps, keyword, "")
    q.ScheduledProcedureStepSequence = [sps]
    return q


class MwlPoller:
    """Polls every ``upstream_poll_seconds``, and at once on :meth:`request_refresh`."""

    def __init__(self, settings: WorklistSettings, worklist: Worklist) -> None:
        self.settings = settings
        self.worklist = worklist
        self.link = LinkStatus(ADAPTER)
        self._refresh = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def request_refresh(self) -> None:
        self._refresh.set()
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not stop.is_set():
            self._refresh.clear()
            self._wake.clear()
            try:
                await asyncio.to_thread(self.poll_once)
            except UpstreamUnavailable as exc:
                log.warning("worklist broker unavailable; serving from the cache",
                            extra={"reason": str(exc)})
            except Exception as exc:
                self.link.failed(type(exc).__name__)
                metrics.UPSTREAM_SYNCS.labels(ADAPTER, "failed").inc()
                log.exception("worklist poll failed")
            if self._refresh.is_set():
                continue
            waiters = [asyncio.ensure_future(stop.wait()),
                       asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.settings.upstream_poll_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    def poll_once(self) -> int:
        """One poll: ask, and on success make the cache match. Returns changes made.

        Raises :class:`UpstreamUnavailable` when the broker did not answer completely.
        """
        s = self.settings
        first, last = self.worklist.window()
        ae = AE(ae_title=s.dicom_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.upstream_timeout_seconds
        ae.connection_timeout = s.upstream_timeout_seconds
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate(s.upstream_mwl_host, s.upstream_mwl_port,
                             ae_title=s.upstream_mwl_ae_title)
        if not assoc.is_established:
            self._unavailable("association not established")
        answers: list[Dataset] = []
        final: int | None = None
        try:
            for status, identifier in assoc.send_c_find(
                    worklist_query(s, first, last), ModalityWorklistInformationFind):
                if not status:  # no response in time, or the association went away
                    break
                code = int(status.Status)
                if code in (statuses.PENDING, statuses.PENDING_OPTIONAL_KEYS_UNSUPPORTED):
                    if identifier is not None:
                        answers.append(identifier)
                else:
                    final = code
        finally:
            if assoc.is_established:
                assoc.release()
        if final != statuses.SUCCESS:
            self._unavailable("query did not complete" if final is None
                              else f"status {statuses.name(final)}")
        steps = []
        refused = 0
        for answer in answers:
            try:
                steps.extend(from_dataset(answer))
            except (ValueError, KeyError, TypeError):
                refused += 1  # one broken answer must not cancel the rest of the day
        if refused:
            log.warning("broker answers without a step identity skipped",
                        extra={"skipped": refused})
        changes = self.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
        self.link.ok()
        metrics.UPSTREAM_SYNCS.labels(ADAPTER, "success").inc()
        log.info("worklist polled", extra={"answers": len(answers), "changes": len(changes)})
        return len(changes)

    def _unavailable(self, reason: str) -> None:
        self.link.failed(reason)
        metrics.UPSTREAM_SYNCS.labels(ADAPTER, "unavailable").inc()
        raise UpstreamUnavailable(reason)
