"""monitor.fleet_300_trailers: the fleet monitor under the events of 300 trailers.

A generator publishes, to a real broker, what 300 trailers send at the fleet's busiest:
a heartbeat from each every 30 s (10/s), and the overnight catch-up in which each
trailer's whole day (100 women -> 1 MPPS COMPLETED + 4 images each) is uploaded and
stored in PACS within 2 hours (per image: upload completed + delivered). That is
~48 events/s; the generator plays it at SPEED times that rate for DURATION seconds.
The monitor runs in fleet mode as a real subprocess; we read its CPU time and peak RSS
from /proc and check it kept up (every event handled).

Ours = CPU-seconds the monitor used per wall-second (cores); reference = 1.0 core, the
goal's budget; goal: ratio <= 1. Peak RSS is in the notes against the 500 MB goal.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import (
    Heartbeat,
    LinkState,
    ObjectDelivered,
    ObjectIdentity,
    PerformedInstance,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    UploadCompleted,
    new_meta,
    timestamp,
)
from trailerlink_testing.kafka import KafkaBroker
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script
from trailerlink_testing.scrape import samples
from trailerlink_testing.waiting import wait_until

from benchmarks import Benchmark, Row

TRAILERS = 300
SPEED = 5.0
DURATION = 60.0
HEARTBEATS_PER_S = TRAILERS / 30
STUDIES_PER_S = TRAILERS * 100 / 7200  # a day's MPPS per trailer in a 2 h catch-up


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _study_events(trailer: str) -> list[tuple[str, str, object]]:
    study = _uid()
    sops = [_uid() for _ in range(4)]
    key = f"{trailer}/{study}"
    out: list[tuple[str, str, object]] = [
        (
            topics.CENTRAL_PROCEDURE_STEP,
            key,
            ProcedureStepUpdated(
                meta=new_meta("worklist", trailer),
                mpps_sop_instance_uid=_uid(),
                status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
                study_instance_uid=study,
                ended_at=timestamp(),
                performed_instances=[PerformedInstance(sop_instance_uid=s) for s in sops],
            ),
        )
    ]
    for sop in sops:
        ident = ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop)
        out.append(
            (
                topics.CENTRAL_UPLOAD_COMPLETED,
                key,
                UploadCompleted(
                    meta=new_meta("ingest", trailer),
                    upload_id=uuid.uuid4().hex,
                    object=ident,
                    completed_at=timestamp(),
                ),
            )
        )
        out.append(
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                ObjectDelivered(
                    meta=new_meta("ingest", trailer),
                    object=ident,
                    pacs_ae_title="PACS",
                    received_at=timestamp(),
                    delivered_at=timestamp(),
                ),
            )
        )
    return out


async def _generate(bootstrap: str) -> int:
    producer = EventProducer(bootstrap, client_id="bench-fleet")
    await producer.start()
    sequence = dict.fromkeys(range(TRAILERS), 0)
    sent = 0
    hb_credit = study_credit = 0.0
    next_trailer = 0
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < DURATION:
            tick = time.monotonic()
            hb_credit += HEARTBEATS_PER_S * SPEED * 0.1
            study_credit += STUDIES_PER_S * SPEED * 0.1
            batch: list[tuple[str, str, object]] = []
            while hb_credit >= 1:
                hb_credit -= 1
                t = next_trailer % TRAILERS
                next_trailer += 1
                sequence[t] += 1
                trailer = f"trailer-{t:03d}"
                hb = Heartbeat(
                    meta=new_meta("monitor", trailer),
                    sequence=sequence[t],
                    backlog_objects=12,
                    backlog_bytes=300 << 20,
                    oldest_unsent_age_seconds=elapsed,
                    disk_free_bytes=50 << 30,
                    disk_total_bytes=100 << 30,
                    link_state=LinkState.LINK_STATE_UP,
                    link_goodput_bytes_per_second=200_000,
                    worklist_cache_age_seconds=20,
                )
                hb.versions.update({"gateway": "0.1.0", "codec": "0.1.0", "uplink": "0.1.0"})
                batch.append((topics.CENTRAL_HEARTBEAT, trailer, hb))
            while study_credit >= 1:
                study_credit -= 1
                batch += _study_events(f"trailer-{int(uuid.uuid4().int % TRAILERS):03d}")
            await asyncio.gather(*(producer.publish(tp, k, ev) for tp, k, ev in batch))  # type: ignore[arg-type]
            sent += len(batch)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    finally:
        await producer.stop()
    return sent


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run() -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = KafkaBroker(root / "kafka")
        broker.start()
        try:
            broker.create_topics("central")
            fleet_file = root / "trailers.yaml"
            fleet_file.write_text(
                "trailers:\n" + "".join(f'  - "trailer-{t:03d}"\n' for t in range(TRAILERS))
            )
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            monitor = ServiceProcess(
                [console_script("trailerlink-monitor")],
                env={
                    "TRAILERLINK_MODE": "fleet",
                    "TRAILERLINK_HTTP_PORT": str(port),
                    "TRAILERLINK_HTTP_HOST": "127.0.0.1",
                    "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                    "TRAILERLINK_DATA_DIR": str(root / "data"),
                    "TRAILERLINK_FLEET_FILE": str(fleet_file),
                    "TRAILERLINK_LOG_LEVEL": "WARNING",
                },
                log_path=root / "monitor.log",
            )
            with monitor:
                monitor.wait_ready(f"{base}/readyz")
                wait_until(
                    lambda: samples(base, "trailerlink_monitor_trailer_expected"),
                    30,
                    "fleet loaded",
                )
                cpu0, wall0 = _cpu_seconds(monitor.pid), time.monotonic()
                sent = asyncio.run(_generate(broker.bootstrap))

                def handled() -> float:
                    return sum(samples(base, "trailerlink_kafka_messages_consumed_total").values())

                wait_until(lambda: handled() >= sent, 120, "monitor caught up", interval=0.5)
                wall = time.monotonic() - wall0
                cores = (_cpu_seconds(monitor.pid) - cpu0) / wall
                rss = _peak_rss_mb(monitor.pid)
        finally:
            broker.stop()
    return Row(
        "monitor.fleet_300_trailers",
        f"fleet monitor, 300 trailers at {SPEED:g}x the overnight peak ({sent / wall:.0f} "
        f"events/s for {wall:.0f} s): CPU cores used vs the 1-core budget",
        round(cores, 3),
        1.0,
        "cores",
        "<=",
        1.0,
        f"peak RSS {rss:.0f} MB (goal < 500 MB); {sent} events, all handled",
    )


BENCHMARKS = [Benchmark("monitor.fleet_300_trailers", run)]
