"""`make demo`: a trailer day into a real PACS, on one machine.

Starts two Kafka brokers (trailer and data centre), Orthanc as the hospital PACS, a dev CA
with one trailer certificate, a data-centre sealing key, dcmtk ``wlmscpfs`` holding a
synthetic clinic day for this trailer's site, and every service as a subprocess
(``trailerlink_testing.stack``). A simulated modality then screens each woman: worklist
query (findscu), MPPS in progress, 4 views by storescu, MPPS completed, storage
commitment. It waits until every commitment is answered, checks every image in Orthanc
byte for byte (SHA-256 of the dataset after group 0002), scans the services' logs for
the synthetic patients' names, NHS numbers and birth dates, prints a table and ends
with one JSON line. Exit status 0 only if nothing is missing, altered or unconfirmed.

Default: 5 women x 4 views of 2048 x 1664 (14 bits stored, ~6.8 MB each): a few
minutes on 2 cores. A full day: ``DEMO_WOMEN=80 DEMO_ROWS=4096 DEMO_COLUMNS=3328``
(or ``--women 80 --rows 4096 --columns 3328``).

``LINK=8mbit`` (``--link``; any ``<n>mbit``/``<n>kbit``) sends the uplink -> ingest
bytes through a tc-tbf-shaped hop (``trailerlink_testing.shapedwan``). Where tc cannot
shape (no root, no namespaces) it says so and falls back to the fault proxy's drip at
that rate, per connection, with the uplink sending one upload at a time.

``SILENT_CUT=60`` (``--silent-cut``; needs ``LINK``) loses the link the way 4G does, once,
mid-upload: the uplink then runs on a trailer host of its own (a network namespace whose
WAN to the ingest is a veth shaped at ``LINK``, :mod:`trailerlink_testing.trailerhost`),
and that WAN goes down for the given seconds while the screening goes on. No FIN, no RST
reaches either side. The summary says how soon after the link's return the ingest
acknowledged bytes again; the run must still end ``"ok": true``.

``CENTRAL=scaled`` (``--central``) runs the data centre as it is deployed for a fleet:
three ingest replicas behind HAProxy (TCP, each replica terminating mutual TLS) sharing
one uploads directory and a PostgreSQL ledger, on a three-node Kafka (replication factor
3, ``min.insync.replicas=2``). The JSON line says ``"central": "scaled"`` and how many
uploads each replica completed.

``RUNTIME=containers`` (``--runtime``) runs every service from its image (`make images`,
built first) as a read-only, non-root container on the host network instead of a
process of the workspace venv; the JSON line says ``"runtime": "containers"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from trailerlink_testing.containers import build_images, image_for
from trailerlink_testing.netns import netns_available
from trailerlink_testing.shapedwan import Link, open_link, parse_rate
from trailerlink_testing.stack import (
    CentralStack,
    SimulatedModality,
    StudyResult,
    TrailerStack,
    booking_secrets,
    scan_logs_for,
    synthetic_day,
)
from trailerlink_testing.trailerhost import TrailerHost
from trailerlink_testing.waiting import ConditionTimeout, wait_until


def _args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--women", type=int, default=int(env.get("DEMO_WOMEN", 5)))
    p.add_argument("--rows", type=int, default=int(env.get("DEMO_ROWS", 2048)))
    p.add_argument("--columns", type=int, default=int(env.get("DEMO_COLUMNS", 1664)))
    p.add_argument(
        "--timeout",
        type=float,
        default=float(env.get("DEMO_TIMEOUT", 900)),
        help="seconds to wait for every commitment after the last store",
    )
    p.add_argument(
        "--keep",
        default=env.get("DEMO_KEEP", ""),
        help="keep the run's directory here (logs, spool, PACS storage)",
    )
    p.add_argument(
        "--link",
        default=env.get("LINK", ""),
        help="shape the uplink -> ingest link to this rate, e.g. 8mbit, 512kbit",
    )
    p.add_argument(
        "--silent-cut",
        type=float,
        default=float(env.get("SILENT_CUT") or 0),
        help="seconds the link is lost silently, once, mid-upload (needs --link)",
    )
    p.add_argument(
        "--central",
        choices=("single", "scaled"),
        default=env.get("CENTRAL") or "single",
        help="the data centre: one ingest on one Kafka broker, or three ingest replicas "
        "behind HAProxy on PostgreSQL and a three-node Kafka",
    )
    p.add_argument(
        "--runtime",
        choices=("processes", "containers"),
        default=env.get("RUNTIME") or "processes",
        help="run the services as processes (fast) or as the images `make "
        "images` builds (read-only, non-root containers)",
    )
    args = p.parse_args(argv)
    if args.runtime == "containers" and args.central == "scaled":
        p.error("CENTRAL=scaled runs the ingest replicas as processes (RUNTIME=processes)")
    if args.runtime == "containers" and args.silent_cut:
        p.error("SILENT_CUT runs the uplink in a namespace of its own: processes only")
    try:
        args.link_bits = parse_rate(args.link) if args.link else 0
    except ValueError as exc:
        p.error(str(exc))
    if args.silent_cut < 0:
        p.error("--silent-cut: seconds, 0 or more")
    if args.silent_cut and not args.link_bits:
        p.error("SILENT_CUT needs LINK (the cut is of the shaped WAN), e.g. LINK=8mbit")
    if args.silent_cut and not netns_available():
        p.error("SILENT_CUT needs root with ip and tc (the uplink runs in a namespace)")
    return args


def _ingest_cpu_seconds(central: CentralStack) -> float:
    """CPU seconds the ingest processes have used (user + system, every replica)."""
    return sum(ingest.metric("process_cpu_seconds_total") for ingest in central.ingests)


def _central_shape(args: argparse.Namespace) -> dict[str, int]:
    """CentralStack's size for ``CENTRAL``: one of everything, or the fleet's shape."""
    if args.central == "scaled":
        return {"kafka_nodes": 3, "ingest_replicas": 3}
    return {}


@contextlib.contextmanager
def _wan(
    args: argparse.Namespace, work: Path
) -> Iterator[tuple[CentralStack, Link, TrailerHost | None]]:
    """The data centre and the link to it: the shaped hop of ``LINK``, or with
    ``SILENT_CUT`` a trailer host whose own WAN is shaped (and will be cut)."""
    if args.silent_cut:
        with TrailerHost(rate_bits=args.link_bits) as host:
            central = CentralStack(
                work / "central", tus_host=host.wan_server_ip, **_central_shape(args)
            )
            yield (
                central,
                Link(
                    args.link,
                    args.link_bits,
                    "tc-tbf",
                    where=(
                        "tc tbf on the WAN veth of the uplink's own namespace (cut silently once)"
                    ),
                ),
                host,
            )
        return
    central = CentralStack(work / "central", **_central_shape(args))
    with open_link(args.link_bits, args.link, ("127.0.0.1", central.tus_port)) as link:
        yield central, link, None


class _SilentCut:
    """Once the ingest is receiving this trailer's bytes, take the trailer's WAN down for
    ``seconds``, bring it back, and time the first bytes acknowledged after that."""

    def __init__(self, host: TrailerHost, central: CentralStack, seconds: float) -> None:
        self.host, self.central, self.seconds = host, central, seconds
        self.resumed_after: float | None = None
        self.error = ""
        self._thread = threading.Thread(target=self._run, name="silent-cut", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _durable(self) -> float:
        return sum(
            ingest.metric(
                "trailerlink_ingest_bytes_received_total", trailer=self.central.trailer_id
            )
            for ingest in self.central.ingests
        )

    def _run(self) -> None:
        try:
            wait_until(
                lambda: (
                    self._durable() > 0
                    and sum(
                        ingest.metric("trailerlink_ingest_uploads_active")
                        for ingest in self.central.ingests
                    )
                    >= 1
                ),
                600,
                "an upload in progress",
                interval=0.05,
            )
            cut_at = self.host.cut()
            print(
                f"  !! link lost silently (interface down: no FIN, no RST) for "
                f"{self.seconds:g}s, mid-upload",
                flush=True,
            )
            time.sleep(max(0.0, cut_at + self.seconds - time.monotonic()))  # the outage
            back = self.host.restore()
            durable = self._durable()
            wait_until(
                lambda: self._durable() > durable,
                600,
                "bytes acknowledged after the link's return",
                interval=0.05,
            )
            self.resumed_after = time.monotonic() - back
            print(
                f"  link back; the ingest acknowledged bytes again {self.resumed_after:.1f}s later",
                flush=True,
            )
        except Exception as exc:  # reported in the summary; the run goes on
            self.error = str(exc)
            self.host.restore()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    bookings = synthetic_day(args.women)
    print(
        f"trailerlink demo: {args.women} women x 4 views of {args.rows}x{args.columns} "
        f"(14-bit MG), run directory {work}",
        flush=True,
    )
    started = time.time()
    cut: _SilentCut | None = None
    if args.runtime == "containers":
        print("  images: make images (podman) ...", flush=True)
        build_images()
        print(
            f"  services run as containers of {image_for('trailerlink-gateway')} and "
            "its five siblings: read-only, uid 10001, host network",
            flush=True,
        )
    with _wan(args, work) as (central, link, host):
        central.runtime = args.runtime
        if link.fallback:
            print(f"  !! LINK={args.link}: {link.fallback}", flush=True)
        print(f"  link uplink -> ingest: {link.describe()}", flush=True)
        ingest_url = f"https://127.0.0.1:{link.port}" if link.port else None
        trailer = TrailerStack(
            work / "trailer",
            central,
            bookings,
            ingest_url=ingest_url,
            uplink_env=link.uplink_env,
            uplink_host=host,
        )
        trailer.runtime = args.runtime
        # The trailer's broker boots while the data centre starts up; the trailer stops
        # first on the way out (its services talk to the data centre until then).
        with trailer.booting(), central:
            print(
                f"  data centre up: Kafka {central.broker.bootstrap}, Orthanc AE PACS on "
                f"{central.pacs.dicom_port}, ingest {central.ingest_url}",
                flush=True,
            )
            # The ingests' CPU from here on: what the day cost the data centre to receive,
            # unseal, verify and store (their start-up is not part of it).
            cpu_at_start = _ingest_cpu_seconds(central)
            with trailer:
                print(
                    f"  trailer up: Kafka {trailer.broker.bootstrap}, gateway "
                    f"{trailer.gateway_port}, worklist {trailer.worklist_port}, codec, "
                    f"uplink, monitor agent ({time.time() - started:.0f}s)",
                    flush=True,
                )
                with SimulatedModality(
                    trailer, work / "modality", rows=args.rows, columns=args.columns
                ) as modality:
                    worklist = modality.wait_for_worklist(len(bookings))
                    print(
                        f"  worklist: {len(worklist)} women booked at this site today", flush=True
                    )
                    studies: list[StudyResult] = []
                    if host is not None:
                        cut = _SilentCut(host, central, args.silent_cut)
                        cut.start()
                    for i, item in enumerate(worklist):
                        study = modality.screen(item, seed=i)
                        studies.append(study)
                        print(
                            f"  woman {i + 1}/{len(worklist)}: {len(study.sent)}/4 stored, "
                            f"MPPS {study.mpps_statuses}, commitment requested",
                            flush=True,
                        )
                    try:
                        wait_until(
                            lambda: all(
                                s.confirmed_at is not None or s.commit_failed for s in studies
                            ),
                            args.timeout,
                            "every storage commitment answered",
                            interval=0.5,
                        )
                    except ConditionTimeout as exc:
                        print(f"  !! {exc}", flush=True)
                    if cut is not None:
                        cut.join(60)
                    wait_until(lambda: trailer.backlog_objects() == 0, 60, "uplink backlog empty")
                    bytes_on_wire = trailer.uplink.metric("trailerlink_uplink_sent_bytes_total")
                    shaped_bytes = link.shaper.shaped_bytes() if link.shaper else 0
                    print("  verifying every image in Orthanc ...", flush=True)
                    verified = 0
                    bad: list[str] = []
                    for study in studies:
                        for sop, sha in study.sent.items():
                            if central.pacs_dataset_sha256(sop) == sha:
                                verified += 1
                            else:
                                bad.append(sop)
                    in_pacs = len(central.pacs.instances())
            logs = trailer.log_files() + central.log_files()
            ingest_cpu = _ingest_cpu_seconds(central) - cpu_at_start
            per_replica = {
                ingest.name: int(ingest.metric("trailerlink_ingest_uploads_completed_total"))
                for ingest in central.ingests
            }
            leaks = scan_logs_for(logs, booking_secrets(bookings))
    women = len(studies)
    images_sent = sum(len(s.sent) for s in studies)
    bytes_raw = sum(s.bytes_raw for s in studies)
    seconds = [s.seconds for s in studies if s.seconds is not None]
    confirmed = sum(1 for s in studies if s.confirmed)
    print("\n  study        images  stored->committed")
    for s in studies:
        took = f"{s.seconds:7.1f}s" if s.seconds is not None else "   none"
        print(f"  {s.accession_number:12} {len(s.sent)}/4     {took}")
    print(
        f"\n  images in PACS {in_pacs}, verified byte-identical {verified}/{images_sent}, "
        f"commitments confirmed {confirmed}/{women}"
    )
    print(
        f"  raw {bytes_raw / 1e6:.1f} MB, on the wire {bytes_on_wire / 1e6:.1f} MB, "
        f"logs scanned {len(logs)}, patient data found in logs: "
        f"{sum(len(v) for v in leaks.values())}"
    )
    committed_at = [s.confirmed_at for s in studies if s.confirmed_at is not None]
    day_seconds = max(committed_at) - min(s.started for s in studies) if committed_at else None
    floor = bytes_on_wire * 8 / link.bits_per_second if link.bits_per_second else None
    if link.bits_per_second:
        print(f"  link {link.describe()}")
        print(
            f"  {bytes_on_wire / 1e6:.1f} MB on the wire need at least {floor:.0f}s at "
            "that rate; first C-STORE to last commitment "
            + (f"{day_seconds:.0f}s" if day_seconds is not None else "never")
            + (
                f"; {shaped_bytes / 1e6:.1f} MB of IP packets through the tbf"
                if link.shaper
                else ""
            )
        )
    if cut is not None and cut.error:
        print(f"  !! silent cut: {cut.error}")
    if bad:
        print(f"  !! missing or altered in PACS: {bad}")
    if leaks:
        print(f"  !! patient data in logs: {sorted(leaks)}")
    ok = (
        women == args.women
        and images_sent == 4 * women
        and verified == images_sent
        and confirmed == women
        and in_pacs == images_sent
        and not leaks
        and not any(s.failed or s.commit_failed for s in studies)
        and (cut is None or cut.resumed_after is not None)
    )
    return {
        "women": women,
        "images_sent": images_sent,
        "images_verified_in_pacs": verified,
        "commitments_confirmed": confirmed,
        "bytes_raw": bytes_raw,
        "bytes_on_wire": int(bytes_on_wire),
        "compression_ratio": round(bytes_raw / bytes_on_wire, 3) if bytes_on_wire else 0.0,
        "study_seconds_p50": round(statistics.median(seconds), 2) if seconds else None,
        "study_seconds_p95": round(_pct(seconds, 0.95), 2) if seconds else None,
        "study_seconds_max": round(max(seconds), 2) if seconds else None,
        "link": link.spec or "unshaped",
        "link_shaping": link.shaping,
        "link_bits_per_second": link.bits_per_second or None,
        "link_floor_seconds": round(floor, 1) if floor is not None else None,
        "day_seconds": round(day_seconds, 1) if day_seconds is not None else None,
        "runtime": args.runtime,
        "central": args.central,
        "uploads_completed_per_ingest": per_replica,
        "ingest_cpu_seconds": round(ingest_cpu, 1),
        "ingest_core_seconds_per_raw_gb": (
            round(ingest_cpu / (bytes_raw / 1e9), 1) if bytes_raw else None
        ),
        "silent_cut_seconds": args.silent_cut or None,
        "resumed_after_cut_seconds": (
            round(cut.resumed_after, 1)
            if cut is not None and cut.resumed_after is not None
            else None
        ),
        "log_files_scanned": len(logs),
        "patient_data_in_logs": sum(len(v) for v in leaks.values()),
        "wall_seconds": round(time.time() - started, 1),
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    # SIGTERM unwinds like Ctrl-C, so everything started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The client logs broker start-up noise (coordinator not ready yet) at ERROR.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
        summary = run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="trailerlink-demo-") as tmp:
            summary = run(args, Path(tmp))
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
