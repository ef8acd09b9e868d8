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
from collections import Counter

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]  # made at import

from trailerlink_worklist import charsets, metrics, statuses
from trailerlink_worklist.model import ScheduledStep, Source, from_dataset
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
    for keyword in (
        "AccessionNumber",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "RequestedProcedurePriority",
        "AdmissionID",
    ):
        setattr(q, keyword, "")
    sps = Dataset()
    stations = settings.station_ae_list()
    sps.ScheduledStationAETitle = stations[0] if len(stations) == 1 else ""
    sps.Modality = settings.modality
    sps.ScheduledProcedureStepStartDate = first if first == last else f"{first}-{last}"
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepLocation = settings.site_code
    for keyword in (
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription",
        "ScheduledStationName",
        "ScheduledPerformingPhysicianName",
    ):
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
                log.warning(
                    "worklist broker unavailable; serving from the cache",
                    extra={"reason": str(exc)},
                )
            except Exception as exc:
                self.link.failed(type(exc).__name__)
                metrics.UPSTREAM_SYNCS.labels(ADAPTER, "failed").inc()
                log.exception("worklist poll failed")
            if self._refresh.is_set():
                continue
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(
                waiters,
                timeout=self.settings.upstream_poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
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
        assoc = ae.associate(
            s.upstream_mwl_host, s.upstream_mwl_port, ae_title=s.upstream_mwl_ae_title
        )
        if not assoc.is_established:
            self._unavailable("association not established")
        answers: list[Dataset] = []
        final: int | None = None
        try:
            for status, identifier in assoc.send_c_find(
                worklist_query(s, first, last), ModalityWorklistInformationFind
            ):
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
            self._unavailable(
                "query did not complete" if final is None else f"status {statuses.name(final)}"
            )
        steps, keep = self._decode(answers, first, last)
        changes = self.worklist.replace_window(
            steps, Source.DICOM_MWL, first, last, keep=frozenset(keep)
        )
        self.link.ok()
        metrics.UPSTREAM_SYNCS.labels(ADAPTER, "success").inc()
        log.info("worklist polled", extra={"answers": len(answers), "changes": len(changes)})
        return len(changes)

    def _decode(
        self, answers: list[Dataset], first: str, last: str
    ) -> tuple[list[ScheduledStep], set[str]]:
        """The steps the broker's answers describe, each text value decoded as the
        answer's character set says (or by the undeclared-charset setting), and the
        accession numbers of answers refused (their cached steps are kept)."""
        steps: list[ScheduledStep] = []
        keep: set[str] = set()
        fallbacks: Counter[str] = Counter()
        fallback_accessions: list[str] = []
        refused: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        skipped = 0
        for answer in answers:
            try:
                decoded = charsets.decode_identifier(
                    answer, self.settings.upstream_mwl_undeclared_charset
                )
                found = from_dataset(decoded.dataset)
            except charsets.UndecodableText as exc:
                refused["undecodable"] += 1
                reasons[exc.reason] += 1
                keep.update(a for a in [_raw_accession(answer)] if a)
                continue
            except (ValueError, KeyError, TypeError):
                refused["invalid"] += 1  # one broken answer must not cancel the day
                keep.update(a for a in [_raw_accession(answer)] if a)
                continue
            if decoded.fallback:
                fallbacks[decoded.fallback] += 1
                fallback_accessions.extend(s.accession_number for s in found[:1])
            for step in found:
                if first <= step.scheduled_date <= last:
                    steps.append(step)
                else:
                    skipped += 1
        for charset, count in fallbacks.items():
            metrics.CHARSET_FALLBACKS.labels(ADAPTER, charset).inc(count)
            log.warning(
                "broker answers with non-ASCII text and no Specific Character Set "
                "decoded with the fallback",
                extra={
                    "charset": charset,
                    "answers": count,
                    "accession_numbers": fallback_accessions[:10],
                },
            )
        for reason, count in refused.items():
            metrics.UPSTREAM_ITEMS_REFUSED.labels(ADAPTER, reason).inc(count)
        if refused:
            log.warning(
                "broker answers refused; their cached steps are kept",
                extra={
                    "undecodable": refused["undecodable"],
                    "invalid": refused["invalid"],
                    "reasons": sorted(reasons),
                    "accession_numbers": sorted(keep)[:10],
                },
            )
        if skipped:
            metrics.UPSTREAM_ITEMS_REFUSED.labels(ADAPTER, "out_of_window").inc(skipped)
            log.info(
                "broker steps outside the window skipped",
                extra={"skipped": skipped, "window_first": first, "window_last": last},
            )
        return steps, keep

    def _unavailable(self, reason: str) -> None:
        self.link.failed(reason)
        metrics.UPSTREAM_SYNCS.labels(ADAPTER, "unavailable").inc()
        raise UpstreamUnavailable(reason)


def _raw_accession(answer: Dataset) -> str:
    """The answer's accession number if it is plain ASCII (to keep its cached steps)."""
    elem = answer.get_item(0x00080050)
    value = getattr(elem, "value", None)
    if isinstance(value, bytes) and value.isascii():
        return value.decode("ascii").strip(" \x00")
    return str(value).strip() if isinstance(value, str) and value.isascii() else ""
