"""worklist.cfind_vs_wlmscpfs: C-FIND latency of our MWL SCP against dcmtk's wlmscpfs.

Both serve the same day of 120 appointments (ours from the SQLite cache, wlmscpfs from
``.wl`` files made with dump2dcm), each in its own process as in production (ours is
the ``trailerlink-worklist`` service, its cache seeded before it starts; running it
inside this process made it share an interpreter with the code that reads findscu's
output). dcmtk's findscu asks both the typical modality queries, interleaved, and the
wall time of each findscu run (association, query, all responses, release) is
measured. Ratio = our p95 / wlmscpfs p95 (p50 in the notes).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from trailerlink_crypto.atrest import SpoolKey
from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script
from trailerlink_testing.waiting import wait_until
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
        accession_number=f"BEN{i:05d}",
        scheduled_procedure_step_id=f"SPS{i:05d}",
        scheduled_date=day,
        scheduled_time=f"{8 + i // 12:02d}{(i % 12) * 5:02d}00",
        patient_name=f"TEST^PATIENT{i}",
        patient_id=_NHS[i % len(_NHS)],
        issuer_of_patient_id="NHS",
        patient_birth_date="19700101",
        patient_sex="F",
        requested_procedure_id=f"RP{i:05d}",
        requested_procedure_description="Breast screening mammography",
        study_instance_uid=f"1.2.826.0.1.3680043.8.498.9{i:05d}",
        referring_physician_name="SCREENING^OFFICE",
        modality="MG",
        scheduled_station_ae_title=STATION,
        scheduled_location=SITE,
        scheduled_step_description="Screening 4 views",
    )


def _queries(day: str) -> list[list[str]]:
    returned = [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "RequestedProcedureID",
        "StudyInstanceUID",
        f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.ScheduledProcedureStepStartTime",
    ]
    return [
        # The modality's worklist refresh: today's steps for this station.
        [
            f"{SPS}.Modality=MG",
            f"{SPS}.ScheduledStationAETitle={STATION}",
            f"{SPS}.ScheduledProcedureStepStartDate={day}",
            *returned,
        ],
        # A patient-based query at the console: NHS number.
        ["PatientID=9990000018", *returned[:1], *returned[2:]],
        # Name search with a wildcard.
        ["PatientName=TEST^PATIENT1*", *returned[1:]],
        # Accession number from the paper request.
        ["AccessionNumber=BEN00042", *returned[:4], *returned[5:]],
    ]


def _answers(port: int, aet: str, keys: list[str]) -> int:
    """How many answers a query gets (checked once per query, outside the timing)."""
    result = findscu("127.0.0.1", port, aet, keys)
    if result.final_status != "Success":
        raise RuntimeError(
            f"{aet}: C-FIND did not succeed (findscu exit {result.returncode}): {result.log[-600:]}"
        )
    return len(result.responses)


def _timed(port: int, aet: str, keys: list[str]) -> float:
    """Wall time of one quiet findscu run: association, query, every answer, release.

    Quiet (``-q``) and keeping answers in memory, as a modality does: printing and
    writing 120 answers to files cost findscu more than either server took to send them,
    and added the same noise to both sides.
    """
    argv = ["findscu", "-W", "-q", "-aet", "MODALITY", "-aec", aet]
    for key in keys:
        argv += ["-k", key]
    started = time.perf_counter()
    done = subprocess.run([*argv, "127.0.0.1", str(port)], capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{aet}: findscu exit {done.returncode}: {done.stderr[-600:]!r}")
    return elapsed


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _seed_cache(data_dir: Path, key_file: Path, steps: list[ScheduledStep]) -> None:
    """Write the day into the cache the service will open (as a poll would have)."""
    app = WorklistApp(
        WorklistSettings(  # its DICOM server is never started
            data_dir=data_dir,
            upstream="none",
            site_code=SITE,
            station_ae_titles=STATION,
            log_level="WARNING",
            worklist_key_file=key_file,
        )
    )
    try:
        first, last = app.worklist.window()
        app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
    finally:
        app.cache.close()


def run() -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        day = Clock().today_str()
        steps = [_step(i, day) for i in range(APPOINTMENTS)]
        key_file = root / "worklist.key"  # the cache is encrypted at rest, as deployed
        SpoolKey.generate().write_file(key_file)
        _seed_cache(root / "ours", key_file, steps)
        broker = Wlmscpfs(root / "wl", ae_title="REFERENCE")
        for step in steps:
            ds = to_dataset(step)
            ds.SpecificCharacterSet = "ISO_IR 100"
            broker.write(step.accession_number, ds)
        broker.start()  # listening before our ports are chosen, so none collide
        dicom_port, http_port = free_port(), free_port()
        env = {
            "TRAILERLINK_DATA_DIR": str(root / "ours"),
            "TRAILERLINK_WORKLIST_KEY_FILE": str(key_file),
            "TRAILERLINK_DICOM_HOST": "127.0.0.1",
            "TRAILERLINK_DICOM_PORT": str(dicom_port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(http_port),
            "TRAILERLINK_UPSTREAM": "none",
            "TRAILERLINK_SITE_CODE": SITE,
            "TRAILERLINK_STATION_AE_TITLES": STATION,
            # No broker in this benchmark: the service serves from its cache regardless.
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "TRAILERLINK_LOG_LEVEL": "WARNING",
        }
        service = ServiceProcess(
            [console_script("trailerlink-worklist")], env=env, log_path=root / "worklist.log"
        )
        ours: list[float] = []
        reference: list[float] = []
        try:
            service.start()
            wait_until(
                lambda: (
                    subprocess.run(
                        ["echoscu", "-aec", "TRAILERLINK_MWL", "127.0.0.1", str(dicom_port)],
                        capture_output=True,
                    ).returncode
                    == 0
                ),
                60,
                "the worklist service answering",
            )
            queries = _queries(day)
            for q in queries:  # warm-up, and both must give the same number of answers
                a, b = (
                    _answers(dicom_port, "TRAILERLINK_MWL", q),
                    _answers(broker.port, "REFERENCE", q),
                )
                if a != b:
                    raise RuntimeError("ours and wlmscpfs disagree on a benchmark query")
            for r in range(ROUNDS):
                for q in queries:
                    # Alternate who goes first so neither always meets a warm cache.
                    pair = [
                        (dicom_port, "TRAILERLINK_MWL", ours),
                        (broker.port, "REFERENCE", reference),
                    ]
                    for port, aet, sink in pair if r % 2 == 0 else reversed(pair):
                        sink.append(_timed(port, aet, q))
        finally:
            service.terminate()
            broker.stop()
    ours_p50, ref_p50 = statistics.median(ours), statistics.median(reference)
    return Row(
        id="worklist.cfind_vs_wlmscpfs",
        what=f"MWL C-FIND latency p95, {APPOINTMENTS} appointments, 4 modality queries",
        ours=round(_p95(ours) * 1000, 2),
        reference=round(_p95(reference) * 1000, 2),
        unit="ms",
        goal_op="<=",
        goal=1.0,
        notes=f"quiet findscu wall time per query ({len(ours)} each, interleaved); p50 ours "
        f"{ours_p50 * 1000:.1f} ms vs wlmscpfs {ref_p50 * 1000:.1f} ms "
        f"(ratio {ours_p50 / ref_p50:.2f})",
    )


BENCHMARKS = [Benchmark(id="worklist.cfind_vs_wlmscpfs", run=run)]
