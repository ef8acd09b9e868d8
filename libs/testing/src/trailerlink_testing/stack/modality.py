"""The mammography machine, :class:`SimulatedModality`: dcmtk ``findscu`` for the
worklist, pynetdicom MPPS, dcmtk ``storescu`` for the 4 views (``parse_storescu``
reads what it heard back), pynetdicom storage commitment (a listener takes the
N-EVENT-REPORT on a new association). For the bad-day tests it also sends files' bytes
as they are (corrupt data sets) and aborts an association mid-study; every C-STORE
Success it ever got is booked per SOP UID in ``acknowledged``. :class:`StudyResult` is
what it did for one woman; ``dataset_sha256`` the hash images are compared by at both
ends."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel
from trailerlink_spool.part10 import dataset_offset

from trailerlink_testing.dcmtk import findscu
from trailerlink_testing.dicom import write_synthetic
from trailerlink_testing.stack.clinic import _today
from trailerlink_testing.stack.names import (
    _UID_PREFIX,
    COMMITMENT_INSTANCE,
    EXPLICIT_LE,
    GATEWAY_AE,
    MG,
    MODALITY_AE,
    WORKLIST_AE,
)
from trailerlink_testing.waiting import wait_until

if TYPE_CHECKING:  # the trailer's stack imports the data centre's, which imports this
    from trailerlink_testing.stack.trailer import TrailerStack


def dataset_sha256(part10: bytes) -> str:
    """SHA-256 of the dataset bytes (everything after group 0002) of a Part 10 file."""
    return hashlib.sha256(part10[dataset_offset(part10[:65536]) :]).hexdigest()


@dataclass
class StudyResult:
    """What the modality did for one woman and what it heard back."""

    accession_number: str
    study_instance_uid: str
    sent: dict[str, str] = field(default_factory=dict)  # SOP UID -> dataset SHA-256
    failed: list[str] = field(default_factory=list)
    bytes_raw: int = 0
    started: float = 0.0
    stored: float = 0.0
    confirmed_at: float | None = None
    committed: set[str] = field(default_factory=set)
    commit_failed: set[str] = field(default_factory=set)
    mpps_statuses: list[int] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return bool(self.sent) and set(self.sent) <= self.committed

    @property
    def seconds(self) -> float | None:
        return None if self.confirmed_at is None else self.confirmed_at - self.started


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response( \(([^)]*)\))?")


def parse_storescu(output: str) -> tuple[list[str], list[str]]:
    """(files acknowledged with Success, files not) from ``storescu -v`` output."""
    ok: list[str] = []
    bad: list[str] = []
    current: str | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            if current is not None:
                bad.append(current)
            current = sending.group(1).strip()
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            (ok if response.group(2) == "Success" else bad).append(current)
            current = None
    if current is not None:
        bad.append(current)
    return ok, bad


class SimulatedModality:
    """A mammography machine: worklist query, MPPS, 4 views by storescu, commitment.

    A pynetdicom listener on the trailer's commitment port takes the gateway's
    N-EVENT-REPORTs (the gateway opens a new association for each).
    """

    def __init__(
        self,
        trailer: TrailerStack,
        work_dir: Path,
        *,
        rows: int = 1024,
        columns: int = 832,
        ae_title: str = MODALITY_AE,
    ) -> None:
        self.trailer = trailer
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows, self.columns = rows, columns
        self.ae_title = ae_title
        self.studies: dict[str, StudyResult] = {}  # transaction UID -> study
        # Every C-STORE Success this modality ever got, per SOP UID, whatever became of
        # the attempt (association aborted later, study repeated): each must reach PACS.
        self.acknowledged: dict[str, str] = {}  # SOP UID -> dataset SHA-256
        self.acknowledged_twice_differently: list[str] = []
        self._lock = threading.Lock()
        listener = AE(ae_title=ae_title)
        listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = listener.start_server(
            ("127.0.0.1", trailer.commitment_port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )

    def close(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> SimulatedModality:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        info = event.event_information
        with self._lock:
            study = self.studies.get(str(info.get("TransactionUID", "")))
            if study is not None:
                for ref in info.get("ReferencedSOPSequence", []) or []:
                    study.committed.add(str(ref.ReferencedSOPInstanceUID))
                for ref in info.get("FailedSOPSequence", []) or []:
                    study.commit_failed.add(str(ref.ReferencedSOPInstanceUID))
                if study.confirmed and study.confirmed_at is None:
                    study.confirmed_at = time.time()
        return 0x0000, None

    def _acknowledged(self, study: StudyResult, sop: str, sha: str) -> None:
        """Book one C-STORE Success: from now on that image must arrive in PACS."""
        with self._lock:
            study.sent[sop] = sha
            if self.acknowledged.setdefault(sop, sha) != sha:
                self.acknowledged_twice_differently.append(sop)

    # -- worklist ------------------------------------------------------------------
    def query_worklist(self) -> list[Dataset]:
        """findscu against the trailer's worklist: today's MG steps for this station."""
        keys = [
            "AccessionNumber",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "RequestedProcedureID",
            "ScheduledProcedureStepSequence[0].Modality=MG",
            f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={self.ae_title}",
            f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={_today()}",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        ]
        result = findscu(
            "127.0.0.1", self.trailer.worklist_port, WORKLIST_AE, keys, calling_ae=self.ae_title
        )
        if result.final_status != "Success":
            raise RuntimeError(f"worklist query failed: {result.log[-400:]}")
        return sorted(result.responses, key=lambda r: str(r.AccessionNumber))

    def wait_for_worklist(self, count: int, timeout: float = 60.0) -> list[Dataset]:
        return wait_until(
            lambda: (r := self.query_worklist()) and len(r) >= count and r,
            timeout,
            f"{count} worklist entries",
        )

    # -- one woman -----------------------------------------------------------------
    def _mpps(self, create: Dataset | None, uid: str, modification: Dataset | None) -> int:
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", self.trailer.worklist_port, ae_title=WORKLIST_AE)
        if not assoc.is_established:
            return -1
        try:
            if create is not None:
                status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
            else:
                status, _ = assoc.send_n_set(modification, ModalityPerformedProcedureStep, uid)
            return int(status.Status) if status else -1
        finally:
            assoc.release()

    def write_views(self, item: Dataset, directory: Path, seed: int = 0) -> tuple[str, list[Path]]:
        """Write the woman's 4 views (synthetic 14-bit MG with her worklist demographics)."""
        series_uid = str(generate_uid(prefix=_UID_PREFIX))
        paths = []
        for view in range(4):
            path = directory / f"view{view + 1}.dcm"
            write_synthetic(
                path,
                rows=self.rows,
                columns=self.columns,
                bits_stored=14,
                study_instance_uid=str(item.StudyInstanceUID),
                series_instance_uid=series_uid,
                instance_number=view + 1,
                seed=seed * 4 + view,
            )
            ds = dcmread(path)
            ds.PatientName = item.PatientName
            ds.PatientID = item.PatientID
            ds.PatientBirthDate = item.get("PatientBirthDate", "")
            ds.AccessionNumber = item.AccessionNumber
            ds.StudyDate = ds.ContentDate = _today()
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return series_uid, paths

    def screen(self, item: Dataset, seed: int = 0, commit: bool = True) -> StudyResult:
        """MPPS in progress, store 4 views, MPPS completed, request storage commitment."""
        accession = str(item.AccessionNumber)
        directory = self.dir / accession
        directory.mkdir(parents=True, exist_ok=True)
        series_uid, paths = self.write_views(item, directory, seed)
        study = StudyResult(accession, str(item.StudyInstanceUID))
        sps = item.ScheduledProcedureStepSequence[0]
        mpps_uid = str(generate_uid(prefix=_UID_PREFIX))
        create = Dataset()
        ref = Dataset()
        ref.StudyInstanceUID = item.StudyInstanceUID
        ref.AccessionNumber = accession
        ref.ScheduledProcedureStepID = sps.ScheduledProcedureStepID
        ref.RequestedProcedureID = item.get("RequestedProcedureID", "")
        create.ScheduledStepAttributesSequence = [ref]
        create.PatientName = item.PatientName
        create.PatientID = item.PatientID
        create.PerformedStationAETitle = self.ae_title
        now = dt.datetime.now(ZoneInfo("Europe/London"))
        create.PerformedProcedureStepStartDate = now.strftime("%Y%m%d")
        create.PerformedProcedureStepStartTime = now.strftime("%H%M%S")
        create.PerformedProcedureStepID = f"PPS{accession}"
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        create.Modality = "MG"
        create.PerformedSeriesSequence = []
        study.mpps_statuses.append(self._mpps(create, mpps_uid, None))

        study.started = time.time()
        sops = {}
        for path in paths:
            data = path.read_bytes()
            sops[str(path)] = (
                dcmread(path, stop_before_pixels=True).SOPInstanceUID,
                dataset_sha256(data),
            )
            study.bytes_raw += len(data)
        done = subprocess.run(
            [
                "storescu",
                "-v",
                "-nh",
                "-R",
                "-pdu",
                "131072",
                "-aet",
                self.ae_title,
                "-aec",
                GATEWAY_AE,
                "127.0.0.1",
                str(self.trailer.gateway_port),
                *map(str, paths),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        ok, bad = parse_storescu(done.stdout + done.stderr)
        for p in ok:
            sop, sha = sops[p]
            self._acknowledged(study, str(sop), sha)
        study.failed = [str(sops[p][0]) for p in bad if p in sops]
        study.stored = time.time()

        end = dt.datetime.now(ZoneInfo("Europe/London"))
        finish = Dataset()
        finish.PerformedProcedureStepStatus = "COMPLETED"
        finish.PerformedProcedureStepEndDate = end.strftime("%Y%m%d")
        finish.PerformedProcedureStepEndTime = end.strftime("%H%M%S")
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.RetrieveAETitle = ""
        series.SeriesDescription = "Screening"
        refs = []
        for sop in study.sent:
            r = Dataset()
            r.ReferencedSOPClassUID = MG
            r.ReferencedSOPInstanceUID = sop
            refs.append(r)
        series.ReferencedImageSequence = refs
        finish.PerformedSeriesSequence = [series]
        study.mpps_statuses.append(self._mpps(None, mpps_uid, finish))
        if commit and study.sent:
            self.request_commitment(study)
        return study

    @contextlib.contextmanager
    def _storage_association(self) -> Iterator[Association]:
        """A C-STORE association on which pynetdicom sends each file's data set bytes as
        they are (no decoding, no re-encoding): what the modality hashed is on the wire."""
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(MG, EXPLICIT_LE)
        assoc = ae.associate("127.0.0.1", self.trailer.gateway_port, ae_title=GATEWAY_AE)
        if not assoc.is_established:
            raise RuntimeError("gateway refused the storage association")
        chunked = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            yield assoc
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = chunked
            if assoc.is_established:
                assoc.release()

    def send_raw(self, paths: list[Path]) -> list[Dataset | None]:
        """C-STORE each file's bytes as they are (corrupt ones too); the status datasets."""
        with self._storage_association() as assoc:
            return [assoc.send_c_store(path) or None for path in paths]

    def store_then_abort(self, item: Dataset, stores: int, seed: int = 0) -> StudyResult:
        """Store the first ``stores`` of the woman's 4 views on one association, then
        A-ABORT it, as a modality that loses its network mid-study does.

        The views acknowledged before the abort are booked like any others (they must
        arrive); the rest are in ``failed``.
        """
        accession = str(item.AccessionNumber)
        directory = self.dir / f"{accession}-aborted-{seed}"
        directory.mkdir(parents=True, exist_ok=True)
        _series, paths = self.write_views(item, directory, seed)
        study = StudyResult(accession, str(item.StudyInstanceUID), started=time.time())
        with self._storage_association() as assoc:
            for i, path in enumerate(paths):
                data = path.read_bytes()
                study.bytes_raw += len(data)
                sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                status = assoc.send_c_store(path) if i < stores else None
                if status and int(status.Status) == 0:
                    self._acknowledged(study, sop, dataset_sha256(data))
                else:
                    study.failed.append(sop)
            assoc.abort()
        study.stored = time.time()
        return study

    def request_commitment(self, study: StudyResult) -> str:
        """N-ACTION to the gateway for every image of ``study`` it acknowledged."""
        transaction = str(generate_uid(prefix=_UID_PREFIX))
        with self._lock:
            self.studies[transaction] = study
        ds = Dataset()
        ds.TransactionUID = transaction
        refs = []
        for sop in study.sent:
            r = Dataset()
            r.ReferencedSOPClassUID = MG
            r.ReferencedSOPInstanceUID = sop
            refs.append(r)
        ds.ReferencedSOPSequence = refs
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", self.trailer.gateway_port, ae_title=GATEWAY_AE)
        if not assoc.is_established:
            raise RuntimeError("gateway refused the commitment association")
        try:
            status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
            if not status or int(status.Status) != 0:
                raise RuntimeError(f"commitment request refused: {status}")
        finally:
            assoc.release()
        return transaction
