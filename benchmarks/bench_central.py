"""The data centre under a fleet's load: scale-out across ingest replicas, and nothing
lost or duplicated when a replica dies mid-run.

A fleet simulator plays ``TRAILERS`` trailers (default 50; ``BENCH_FLEET_TRAILERS``),
each with its own certificate from the stack's CA, uploading ``OBJECTS_EACH`` sealed
mammograms one after another over its own mutual-TLS connection, all trailers at once,
through HAProxy (TCP, TLS passed through) to the ingest replicas; then it polls each
trailer's receipts until every object is delivered to PACS (Orthanc). The objects are
sealed once, for one data-centre key given to every stack, so each run sends the same
bytes. Its tus client resumes as an uplink does: a failed request is followed by HEAD
and the rest of the body from the offset the ingest holds.

* ``central.scaleout_3_replicas``: verified MB/s (raw MB whose receipt says delivered,
  per second from the first byte sent to the last receipt) with three replicas over the
  same with one; reference: the ideal speed-up on this machine's cores, min(3, cores).
* ``central.fleet_50_trailers_lost``: the three-replica run again, with the replica that
  is receiving killed (kill -9) a third of the way through and started again: objects
  never delivered plus SOP Instance UIDs PACS holds more than once. Goal 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import resource
import ssl
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from trailerlink_ingest.devca import Issued, issue
from trailerlink_ingest.metadata import UploadMetadata
from trailerlink_sealed import OpeningKey, seal
from trailerlink_sealed.testdata import MGSpec, write_mg_file
from trailerlink_testing.stack import CentralStack
from trailerlink_testing.waiting import ConditionTimeout, wait_until

from benchmarks import Benchmark, Row

TRAILERS = int(os.environ.get("BENCH_FLEET_TRAILERS", "50"))
OBJECTS_EACH = 3
ROWS, COLUMNS = 1024, 832  # 1.7 MB raw each: big enough that pixels dominate
DIGITAL_MG = "1.2.840.10008.5.1.4.1.1.1.2"
WORK = Path(os.environ.get("TRAILERLINK_BENCH_DIR", tempfile.gettempdir()))


@dataclass(frozen=True)
class FleetObject:
    sealed: Path
    metadata: str  # the Upload-Metadata header
    sop_uid: str
    raw_bytes: int


@dataclass(frozen=True)
class SimTrailer:
    trailer_id: str
    objects: tuple[FleetObject, ...]


@dataclass
class FleetRun:
    seconds: float
    delivered: int
    expected: int
    raw_bytes_delivered: int
    duplicates: int
    ingest_cpu_seconds: float
    simulator_cpu_seconds: float
    machine_busy: float  # share of all cores busy (any process) from first byte to last receipt


def _seal_fleet(directory: Path, key: OpeningKey) -> list[SimTrailer]:
    fleet = []
    for t in range(TRAILERS):
        objects = []
        for k in range(OBJECTS_EACH):
            spec = MGSpec(rows=ROWS, cols=COLUMNS, seed=t * OBJECTS_EACH + k)
            original = directory / f"t{t:03d}-{k}.dcm"
            raw = write_mg_file(original, spec)
            sealed = directory / f"t{t:03d}-{k}.sealed"
            result = seal(original, sealed, key.recipient)
            original.unlink()
            meta = UploadMetadata(
                sop_instance_uid=spec.sop_uid,
                study_instance_uid=spec.study_uid,
                series_instance_uid=spec.series_uid,
                sop_class_uid=spec.sop_class or DIGITAL_MG,
                transfer_syntax_uid=spec.transfer_syntax,
                dataset_sha256=result.dataset_sha256 or "",
                file_sha256=result.original_sha256,
                sealed_size=result.sealed_size,
                key_id=result.key_id,
            )
            objects.append(FleetObject(sealed, meta.encode(), spec.sop_uid, raw))
        fleet.append(SimTrailer(f"fleet-{t:03d}", tuple(objects)))
    return fleet


def _enrol(central: CentralStack, fleet: list[SimTrailer]) -> dict[str, tuple[str, str]]:
    """A certificate per simulated trailer from the stack's CA, all allow-listed."""
    ca = Issued(
        x509.load_pem_x509_certificate((central.pki / "ca.crt").read_bytes()),
        serialization.load_pem_private_key(  # type: ignore[arg-type]
            (central.pki / "ca.key").read_bytes(), password=None
        ),
    )
    certs = {}
    for trailer in fleet:
        crt = central.pki / f"{trailer.trailer_id}.crt"
        key = central.pki / f"{trailer.trailer_id}.key"
        issue(ca, trailer.trailer_id).write(crt, key)
        certs[trailer.trailer_id] = (str(crt), str(key))
    central.write_access([central.trailer_id, *(t.trailer_id for t in fleet)])
    return certs


class _Uploader:
    """One simulated trailer's tus client: its objects one after another, resuming after
    a failure from the offset the ingest holds (what the uplink does)."""

    def __init__(self, base: str, cert: tuple[str, str], ca: str) -> None:
        self.base = base
        self.client = httpx.AsyncClient(
            verify=_tls(cert, ca),
            timeout=httpx.Timeout(30.0, connect=5.0),
            headers={"Tus-Resumable": "1.0.0"},
        )
        self.upload_ids: list[str] = []

    async def send_all(self, objects: tuple[FleetObject, ...]) -> None:
        try:
            for obj in objects:
                self.upload_ids.append(await self._send(obj))
        finally:
            await self.client.aclose()

    async def _send(self, obj: FleetObject) -> str:
        data = obj.sealed.read_bytes()
        location = ""
        for _ in range(200):
            try:
                if not location:
                    created = await self.client.post(
                        f"{self.base}/files/",
                        headers={"Upload-Length": str(len(data)), "Upload-Metadata": obj.metadata},
                    )
                    if created.status_code != 201:
                        raise httpx.HTTPError(f"creation answered {created.status_code}")
                    location = self.base + created.headers["Location"]
                    offset = 0
                else:
                    head = await self.client.head(location)
                    if head.status_code != 200:
                        raise httpx.HTTPError(f"HEAD answered {head.status_code}")
                    offset = int(head.headers["Upload-Offset"])
                if offset < len(data):
                    body = data[offset:]
                    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
                    sent = await self.client.patch(
                        location,
                        content=body,
                        headers={
                            "Upload-Offset": str(offset),
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Checksum": f"sha256 {digest}",
                        },
                    )
                    if sent.status_code != 204:
                        raise httpx.HTTPError(f"PATCH answered {sent.status_code}")
                return location.rsplit("/", 1)[-1]
            except (httpx.HTTPError, OSError):
                await asyncio.sleep(0.2)  # a client's back-off between tries, not a sync
        raise RuntimeError("an object could not be sent in 200 tries")


def _tls(cert: tuple[str, str], ca: str) -> ssl.SSLContext:
    """The trailer's side of mutual TLS: its certificate, the data centre's CA."""
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(*cert)
    return context


def _delivered(central: CentralStack, trailer: str, cert: tuple[str, str]) -> dict[str, str]:
    """upload id -> outcome, from the trailer's receipts (through the balancer)."""
    with httpx.Client(verify=_tls(cert, str(central.pki / "ca.crt")), timeout=10) as client:
        rsp = client.get(f"{central.ingest_url}/v1/receipts", params={"after": 0, "limit": 500})
        rsp.raise_for_status()
        return {str(r["upload_id"]): str(r["outcome"]) for r in rsp.json()["receipts"]}


def _run_fleet(
    work: Path, key: OpeningKey, fleet: list[SimTrailer], replicas: int, kill_one: bool = False
) -> FleetRun:
    central = CentralStack(
        work / f"central-{replicas}-{int(kill_one)}", ingest_replicas=replicas, sealing_key=key
    )
    with central:
        certs = _enrol(central, fleet)
        ca = str(central.pki / "ca.crt")
        wait_until(
            lambda: _delivered(central, fleet[-1].trailer_id, certs[fleet[-1].trailer_id]) == {},
            30,
            "the fleet allow-listed",
            interval=0.2,
        )
        cpu_before = sum(i.metric("process_cpu_seconds_total") for i in central.ingests)
        own_before, machine_before = _own_cpu_seconds(), _machine_jiffies()
        uploaders = {
            t.trailer_id: _Uploader(central.ingest_url, certs[t.trailer_id], ca) for t in fleet
        }
        expected = sum(len(t.objects) for t in fleet)
        started = time.monotonic()

        async def send() -> None:
            await asyncio.gather(*(uploaders[t.trailer_id].send_all(t.objects) for t in fleet))

        def delivered_count() -> int:
            return sum(
                1
                for t in fleet
                for outcome in _delivered(central, t.trailer_id, certs[t.trailer_id]).values()
                if outcome == "delivered"
            )

        if kill_one:
            killer = asyncio.run(_send_killing_one(send, central, expected))
            assert killer is not None
        else:
            asyncio.run(send())
        with contextlib.suppress(ConditionTimeout):  # what never arrived is counted lost
            wait_until(lambda: delivered_count() >= expected, 600, "every object delivered", 0.5)
        seconds = time.monotonic() - started
        own, machine_after = _own_cpu_seconds() - own_before, _machine_jiffies()
        busy = (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1])
        delivered = delivered_count()
        cpu = sum(i.metric("process_cpu_seconds_total") for i in central.ingests) - cpu_before
        times = Counter(
            str(i["MainDicomTags"].get("SOPInstanceUID"))
            for i in central.pacs.get("/instances?expand")
        )
        raw_per_sop = {o.sop_uid: o.raw_bytes for t in fleet for o in t.objects}
        raw = sum(raw_per_sop[sop] for sop in times if sop in raw_per_sop)
        return FleetRun(
            seconds=seconds,
            delivered=delivered,
            expected=expected,
            raw_bytes_delivered=raw,
            duplicates=sum(n - 1 for n in times.values() if n > 1),
            ingest_cpu_seconds=cpu,
            simulator_cpu_seconds=own,
            machine_busy=busy,
        )


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def _send_killing_one(send, central: CentralStack, expected: int) -> str | None:  # type: ignore[no-untyped-def]
    """Run ``send`` and, once a third of the uploads completed, kill -9 the replica that
    is receiving (then start it again once the sends are done)."""
    task = asyncio.create_task(send())
    killed = None
    while not task.done() and killed is None:
        completed = sum(
            i.metric("trailerlink_ingest_uploads_completed_total") for i in central.ingests
        )
        if completed >= expected // 3:
            busy = max(central.ingests, key=lambda i: i.metric("trailerlink_ingest_uploads_active"))
            busy.kill9()
            killed = busy
        await asyncio.sleep(0.05)  # polling a metric while the sends run in this loop
    await task
    if killed is not None:
        await asyncio.to_thread(killed.restart)
        return killed.name
    return None


def _fleet_runs() -> tuple[FleetRun, FleetRun, FleetRun]:
    with tempfile.TemporaryDirectory(prefix="bench-central-", dir=WORK) as tmp:
        work = Path(tmp)
        objects = work / "objects"
        objects.mkdir()
        key = OpeningKey.generate()
        fleet = _seal_fleet(objects, key)
        one = _run_fleet(work, key, fleet, replicas=1)
        three = _run_fleet(work, key, fleet, replicas=3)
        faulted = _run_fleet(work, key, fleet, replicas=3, kill_one=True)
        return one, three, faulted


_RUNS: tuple[FleetRun, FleetRun, FleetRun] | None = None


def _runs() -> tuple[FleetRun, FleetRun, FleetRun]:
    global _RUNS
    if _RUNS is None:
        _RUNS = _fleet_runs()
    return _RUNS


def _rate(run: FleetRun) -> float:
    return run.raw_bytes_delivered / 1e6 / run.seconds


def scaleout_3_replicas() -> Row:
    one, three, _ = _runs()
    cores = os.cpu_count() or 1
    ideal = float(min(3, cores))
    # With every component scaling perfectly, three replicas could go no faster than the
    # one-replica rate stretched to a fully busy machine: the ceiling this machine allows.
    ceiling = 1 / max(one.machine_busy, 1e-9) / ideal
    return Row(
        id="central.scaleout_3_replicas",
        what=(
            f"{TRAILERS} simulated trailers x {OBJECTS_EACH} sealed MG ({ROWS}x{COLUMNS}) "
            "through HAProxy: verified MB/s with 3 ingest replicas / 1 replica, against the "
            f"ideal speed-up min(3, cores) = {ideal:g}. 1 replica {_rate(one):.1f} MB/s "
            f"({one.ingest_cpu_seconds:.1f} ingest CPU-s, simulator "
            f"{one.simulator_cpu_seconds:.1f}, machine {one.machine_busy:.0%} busy); "
            f"3 replicas {_rate(three):.1f} MB/s ({three.ingest_cpu_seconds:.1f} ingest CPU-s, "
            f"simulator {three.simulator_cpu_seconds:.1f}, machine {three.machine_busy:.0%} "
            "busy): the simulator, Orthanc and Kafka share the cores, so this machine "
            f"allows at most 1 / {one.machine_busy:.2f} busy / {ideal:g} = {ceiling:.2f} "
            "of the ideal"
        ),
        ours=_rate(three) / _rate(one),
        reference=ideal,
        unit="x",
        goal_op=">=",
        goal=0.85,
    )


def fleet_lost() -> Row:
    _, _, faulted = _runs()
    lost = faulted.expected - faulted.delivered
    return Row(
        id="central.fleet_50_trailers_lost",
        what=(
            f"{TRAILERS} simulated trailers, {faulted.expected} objects, 3 replicas, the "
            "receiving replica killed -9 a third of the way through and restarted: objects "
            f"never delivered ({lost}) + SOPs stored more than once in PACS "
            f"({faulted.duplicates}) / objects sent"
        ),
        ours=float(lost + faulted.duplicates),
        reference=float(faulted.expected),
        unit="objects",
        goal_op="<=",
        goal=0.0,
    )


BENCHMARKS = [
    Benchmark("central.scaleout_3_replicas", scaleout_3_replicas),
    Benchmark("central.fleet_50_trailers_lost", fleet_lost),
]
