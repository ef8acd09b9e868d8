"""worklist.cfind_vs_wlmscpfs: C-FIND latency of our MWL SCP against dcmtk's wlmscpfs.

Both serve the same day of 120 appointments (ours from the SQLite cache, wlmscpfs from
``.wl`` files made with dump2dcm); dcmtk's findscu asks both the typical modality
queries, interleaved, and the wall time of each findscu run (association, query, all
responses, release) is measured. Ratio = our p95 / wlmscpfs p95 (p50 in the notes).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.ports import free_port
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import ScheduledStep, Source, to_dataset
from trailerlink_worklist.settings import WorklistSettings
from trailerlink_worklist.worklist import Clock

from benchmarks import Benchmark, Row

APPOINTMENTS = 120
ROUNDS = 24  # p95 of 96 findscu runs: 48 left it to two or three outliers
STATION = "MGTRAILER1"
SITE = "SITE-BENCH"
SPS = "ScheduledProcedureStepSequence[0]"
_NHS = ("9990000018", "9990000026", "9990000034", "9990000042", "9990000050")


def _step(i: int, day: str) -> ScheduledStep:
    return ScheduledStep(
        accession_number=f"BEN{i:05d}", scheduled_procedure_step_id=f"SPS{i:05d}",
        scheduled_date=day, scheduled_time=f"{8 + i // 12:02d}{(i % 12) * 5:02d}00",
        patient_name=f"TEST^PATIENT{i}", patient_id=_NHS[i % len(_NHS)],
        issuer_of_patient_id="NHS", patient_birth_date="19700101", patient_sex="F",
        requested_procedure_id=f"RP{i:05d}",
        requested_procedure_description="Breast screening mammography",
        study_instance_uid=f"1.2.826.0.1.3680043.8.498.9{i:05d}",
        referring_physician_name="SCREENING^OFFICE", modality="MG",
        scheduled_station_ae_title=STATION, scheduled_location=SITE,
        scheduled_step_description="Screening 4 views")


def _queries(day: str) -> list[list[str]]:
    returned = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "RequestedProcedureID", "StudyInstanceUID",
                f"{SPS}.ScheduledProcedureStepID", f"{SPS}.ScheduledProcedureStepStartTime"]
    return [
        # The modality's worklist refresh: today's steps for this station.
        [f"{SPS}.Modality=MG", f"{SPS}.ScheduledStationAETitle={STATION}",
         f"{SPS}.ScheduledProcedureStepStartDate={day}", *returned],
        # A patient-based query at the console: NHS number.
        ["PatientID=9990000018", *returned[:1], *returned[2:]],
        # Name search with a wildcard.
        ["PatientName=TEST^PATIENT1*", *returned[1:]],
        # Accession number from the paper request.
        ["AccessionNumber=BEN00042", *returned[:4], *returned[5:]],
    ]


def _timed(port: int, aet: str, keys: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    result = findscu("127.0.0.1", port, aet, keys)
    elapsed = time.perf_counter() - started
    if result.final_status != "Success":
        raise RuntimeError(f"{aet}: C-FIND did not succeed (findscu exit "
                           f"{result.returncode}): {result.log[-600:]}")
    return elapsed, len(result.responses)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run() -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        day = Clock().today_str()
        settings = WorklistSettings(
            data_dir=root / "ours", dicom_host="127.0.0.1", dicom_port=free_port(),
            upstream="none", site_code=SITE, station_ae_titles=STATION,
            log_level="WARNING")
        app = WorklistApp(settings)
        steps = [_step(i, day) for i in range(APPOINTMENTS)]
        first, last = app.worklist.window()
        app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
        app.scp.start()
        broker = Wlmscpfs(root / "wl", ae_title="REFERENCE")
        for step in steps:
            ds = to_dataset(step)
            ds.SpecificCharacterSet = "ISO_IR 100"
            broker.write(step.accession_number, ds)
        broker.start()
        ours: list[float] = []
        reference: list[float] = []
        try:
            queries = _queries(day)
            for q in queries:  # warm-up, and both must give the same number of answers
                a, b = _timed(app.scp.port, "TRAILERLINK_MWL", q), _timed(
                    broker.port, "REFERENCE", q)
                if a[1] != b[1]:
                    raise RuntimeError("ours and wlmscpfs disagree on a benchmark query")
            for r in range(ROUNDS):
                for q in queries:
                    # Alternate who goes first so neither always meets a warm cache.
                    pair = [(app.scp.port, "TRAILERLINK_MWL", ours),
                            (broker.port, "REFERENCE", reference)]
                    for port, aet, sink in pair if r % 2 == 0 else reversed(pair):
                        sink.append(_timed(port, aet, q)[0])
        finally:
            broker.stop()
            app.scp.stop()
            app.cache.close()
    ours_p50, ref_p50 = statistics.median(ours), statistics.median(reference)
    return Row(
        id="worklist.cfind_vs_wlmscpfs",
        what=f"MWL C-FIND latency p95, {APPOINTMENTS} appointments, 4 modality queries",
        ours=round(_p95(ours) * 1000, 2),
        reference=round(_p95(reference) * 1000, 2),
        unit="ms",
        goal_op="<=",
        goal=1.0,
        notes=f"findscu wall time per query ({len(ours)} each, interleaved); p50 ours "
              f"{ours_p50 * 1000:.1f} ms vs wlmscpfs {ref_p50 * 1000:.1f} ms "
              f"(ratio {ours_p50 / ref_p50:.2f})",
    )


BENCHMARKS = [Benchmark(id="worklist.cfind_vs_wlmscpfs", run=run)]
