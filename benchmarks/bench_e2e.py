"""End-to-end benchmark: acquisition -> PACS time of a 4-view study on an 8 Mbit/s link,
against the ideal (the study's sealed bytes / link rate).

Everything is real (``trailerlink_testing.stack``: two brokers, Orthanc, every service as
a process, dcmtk storescu as the modality). The 8 Mbit/s link is tc tbf on a veth hop
through a network namespace between the uplink and the ingest
(``trailerlink_testing.shapedwan.open_link``, as `make demo LINK=8mbit`); tbf counts
IP/TCP/TLS headers too, so the payload tops out near 0.95 of the rate and that overhead
is in the ratio. Where tc cannot shape, the row falls back to the fault proxy's drip
(1,000,000 bytes/s of TLS payload per connection, one upload at a time) and says so.
The clock runs from the first C-STORE to the storage-commitment report that confirms the
whole study, one study at a time (nothing queued ahead of it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from trailerlink_testing.dicom import HOLOGIC_COLUMNS, HOLOGIC_ROWS
from trailerlink_testing.shapedwan import open_link
from trailerlink_testing.stack import CentralStack, SimulatedModality, TrailerStack, synthetic_day
from trailerlink_testing.waiting import wait_until

from benchmarks import Benchmark, Row

LINK_BYTES_PER_SECOND = 1_000_000  # 8 Mbit/s
STUDIES = int(os.environ.get("BENCH_E2E_STUDIES", "2"))


def study_time_vs_ideal() -> Row:
    ratios: list[float] = []
    details: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        bookings = synthetic_day(STUDIES, seed=3)
        with (
            CentralStack(work / "central") as central,
            open_link(LINK_BYTES_PER_SECOND * 8, "8mbit", ("127.0.0.1", central.tus_port)) as link,
            TrailerStack(
                work / "trailer",
                central,
                bookings,
                ingest_url=f"https://127.0.0.1:{link.port}",
                uplink_env=link.uplink_env,
            ) as trailer,
            SimulatedModality(
                trailer, work / "modality", rows=HOLOGIC_ROWS, columns=HOLOGIC_COLUMNS
            ) as modality,
        ):
            for i, item in enumerate(modality.wait_for_worklist(STUDIES)):
                before = trailer.uplink.metric("trailerlink_uplink_acknowledged_bytes_total")
                study = modality.screen(item, seed=i)
                wait_until(lambda s=study: s.confirmed, 900, "the study committed", interval=0.1)
                sealed = (
                    trailer.uplink.metric("trailerlink_uplink_acknowledged_bytes_total") - before
                )
                seconds = study.seconds or float("nan")
                ideal = sealed / LINK_BYTES_PER_SECOND
                ratios.append(seconds / ideal)
                details.append(
                    f"{seconds:.1f}s vs {ideal:.1f}s ideal "
                    f"({sealed / 1e6:.1f} MB sealed, "
                    f"{study.bytes_raw / 1e6:.0f} MB raw)"
                )
    worst = max(ratios)
    return Row(
        id="e2e.study_time_vs_ideal",
        what="4-view Hologic-size study, first C-STORE -> commitment, 8 Mbit/s link",
        ours=worst,
        reference=1.0,
        unit="x ideal",
        goal_op="<=",
        goal=1.3,
        notes="; ".join(details)
        + f"; link: {link.describe()}"
        + (f" (FALLBACK: {link.fallback})" if link.fallback else ""),
    )


BENCHMARKS = [Benchmark(id="e2e.study_time_vs_ideal", run=study_time_vs_ideal)]
