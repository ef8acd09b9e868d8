"""The whole system on one machine, every piece a real process: what `make demo` and the
end-to-end tests start (one implementation for both).

    with CentralStack(work / "central") as central, \\
            TrailerStack(work / "trailer", central, bookings) as trailer:
        modality = SimulatedModality(trailer, work / "modality")
        result = modality.screen(modality.query_worklist()[0])

* :class:`CentralStack` — the data centre: its own Kafka broker, Orthanc as the PACS, a
  development CA with one trailer certificate (``trailerlink-ingest dev-ca``), a sealing
  key pair, the ingest and the fleet monitor.
* :class:`TrailerStack` — the trailer: its own Kafka broker, dcmtk ``wlmscpfs`` as the
  Trust's worklist broker holding this site's synthetic clinic day, then the worklist,
  gateway, codec, uplink and the monitor agent.
* :class:`SimulatedModality` — the mammography machine: dcmtk ``findscu`` for the
  worklist, pynetdicom MPPS, dcmtk ``storescu`` for the 4 views, pynetdicom storage
  commitment (a listener takes the N-EVENT-REPORT on a new association). For the
  bad-day tests it also sends files' bytes as they are (corrupt data sets) and aborts
  an association mid-study; every C-STORE Success it ever got is booked per SOP UID in
  ``acknowledged``: those images must reach PACS, whatever became of their attempt.

Synthetic data only: TEST^ names, NHS numbers from the 999 test range. Every service's
log goes to ``<stack dir>/logs/<service>.log`` (the tests scan them for patient data).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self
from zoneinfo import ZoneInfo

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
)
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_events.kafka import create_topics
from trailerlink_sealed import OpeningKey
from trailerlink_spool.part10 import dataset_offset

from trailerlink_testing.containers import ContainerProcess, hand_over, image_for
from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.dicom import write_synthetic
from trailerlink_testing.kafka import KafkaBroker
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get, http_ok
from trailerlink_testing.trailerhost import TrailerHost
from trailerlink_testing.waiting import wait_until

TRAILER_ID = "trailer-01"
SITE_CODE = "SITE-DEMO01"
MODALITY_AE = "MG1"
CANARY_AE = "TLCANARY"  # the monitor agent's synthetic canary (services/monitor README)
GATEWAY_AE = "TRAILERLINK"
WORKLIST_AE = "TRAILERLINK_MWL"
UPSTREAM_AE = "NBSS_MWL"
PACS_AE = "PACS"
MG = DigitalMammographyXRayImageStorageForPresentation
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def dataset_sha256(part10: bytes) -> str:
    """SHA-256 of the dataset bytes (everything after group 0002) of a Part 10 file."""
    return hashlib.sha256(part10[dataset_offset(part10[:65536]) :]).hexdigest()


# --- the synthetic clinic day ----------------------------------------------------------
def _nhs_number(serial: int) -> str:
    """A valid NHS number in the 999 test range (modulus 11 check digit)."""
    while True:
        body = f"999{serial % 1_000_000:06d}"
        check = 11 - sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return body + str(check)
        serial += 1


@dataclass(frozen=True)
class Booking:
    """One woman booked at this trailer's site today (synthetic)."""

    accession_number: str
    patient_name: str
    patient_id: str
    birth_date: str
    study_instance_uid: str
    sps_id: str
    requested_procedure_id: str
    scheduled_time: str


def synthetic_day(women: int, seed: int = 0) -> list[Booking]:
    """``women`` bookings for today: TEST^ names, 999 NHS numbers, distinct birth dates."""
    out = []
    for i in range(women):
        n = seed * 1000 + i
        out.append(
            Booking(
                accession_number=f"DEMO{n:06d}",
                patient_name=f"TESTDEMO^WOMAN{n:04d}",
                patient_id=_nhs_number(100_000 + n * 7),
                birth_date=f"19{55 + n % 20:02d}{1 + n % 12:02d}{1 + n % 27:02d}",
                study_instance_uid=f"{_UID_PREFIX}42.{seed}.{i + 1}",
                sps_id=f"SPS{n:06d}",
                requested_procedure_id=f"RP{n:06d}",
                scheduled_time=f"{8 + (i // 6) % 10:02d}{(i % 6) * 10:02d}00",
            )
        )
    return out


def _today() -> str:
    return dt.datetime.now(ZoneInfo("Europe/London")).strftime("%Y%m%d")


def _worklist_item(b: Booking, station: str, site: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.AccessionNumber = b.accession_number
    ds.ReferringPhysicianName = "SCREENING^OFFICE"
    ds.PatientName = b.patient_name
    ds.PatientID = b.patient_id
    ds.IssuerOfPatientID = "NHS"
    ds.PatientBirthDate = b.birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = b.study_instance_uid
    ds.RequestedProcedureID = b.requested_procedure_id
    ds.RequestedProcedureDescription = "Breast screening mammography"
    sps = Dataset()
    sps.Modality = "MG"
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = _today()
    sps.ScheduledProcedureStepStartTime = b.scheduled_time
    sps.ScheduledProcedureStepDescription = "Screening 4 views"
    sps.ScheduledProcedureStepID = b.sps_id
    sps.ScheduledProcedureStepLocation = site
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


# --- services --------------------------------------------------------------------------
@dataclass
class Service:
    """One trailerlink service subprocess with its HTTP port."""

    name: str
    proc: ServiceProcess
    http_port: int
    ports: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.proc.wait_ready(self.url("/readyz"), timeout)

    def ready(self) -> bool:
        return http_ok(self.url("/readyz"))

    def kill9(self) -> None:
        self.proc.kill9()

    def restart(self, timeout: float = 90.0) -> None:
        """Start again after a kill (same command and environment) and wait until ready."""
        if not self.proc.running():
            self.proc.start()
        self.wait_ready(timeout)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for line in http_get(self.url("/metrics")).splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total


def _start_service(
    name: str,
    script: str,
    env: dict[str, str],
    logs: Path,
    wait: bool = True,
    prefix: Sequence[str] = (),
    host: str = "127.0.0.1",
    runtime: str = "processes",
    mount: Path | None = None,
    site_env: Mapping[str, str] = {},
) -> Service:
    """Start ``script`` (``prefix`` first: e.g. ``ip netns exec NS``), its HTTP port on
    ``host``; with ``runtime="containers"`` its image instead, ``mount`` (the run
    directory every path in ``env`` is under) mounted at the same path. ``site_env``:
    what every service of the site gets (e.g. the trace exporter), after ``env``."""
    http_port = int(env.get("TRAILERLINK_HTTP_PORT") or free_port())
    full = {
        "TRAILERLINK_HTTP_HOST": host,
        "TRAILERLINK_HTTP_PORT": str(http_port),
        "TRAILERLINK_LOG_LEVEL": "INFO",
        **env,
        **site_env,
    }
    logs.mkdir(parents=True, exist_ok=True)
    proc: ServiceProcess
    if runtime == "containers":
        assert mount is not None and not prefix, "containers need a mount and no prefix"
        hand_over(mount)
        proc = ContainerProcess(
            f"tl-{name}-{http_port}", image_for(script), full, mount, log_path=logs / f"{name}.log"
        )
    else:
        proc = ServiceProcess(
            [*prefix, console_script(script)], env=full, log_path=logs / f"{name}.log"
        )
    proc.start()
    service = Service(name, proc, http_port, host=host)
    if wait:
        service.wait_ready()
    return service


def _wait_all_ready(services: Iterable[Service], timeout: float = 120.0) -> None:
    """Wait until every one of ``services`` (started together: their start-ups overlap)
    answers /readyz."""
    for service in services:
        service.wait_ready(timeout)


def restart_all(services: Iterable[Service], timeout: float = 120.0) -> None:
    """Start again every one of ``services`` that is not running, then wait for all."""
    services = list(services)
    for service in services:
        if not service.proc.running():
            service.proc.start()
    _wait_all_ready(services, timeout)


def _make_topics(bootstrap: str, site: str) -> None:
    asyncio.run(create_topics(bootstrap, site))  # type: ignore[arg-type]


class _Stack:
    """Start/stop bookkeeping shared by both sites."""

    runtime = "processes"
    """How the services run: ``processes`` (the workspace venv) or ``containers`` (the
    images of `make images`, see :mod:`trailerlink_testing.containers`)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs = self.dir / "logs"
        self.services: dict[str, Service] = {}
        self.site_env: dict[str, str] = {}
        """Environment every service of this site starts with (a test's choice, e.g.
        the OTLP exporter of :class:`~trailerlink_testing.jaeger.Jaeger`)."""
        self._stops: list[Callable[[], None]] = []
        self._broker_boot: Future[None] | None = None

    def boot_broker(self) -> None:
        """Start this site's broker booting in the background (a JVM start takes tens of
        seconds on 2 busy cores); ``start()`` overlaps it with the rest and waits for it."""
        if self._broker_boot is not None:
            return
        broker: KafkaBroker = self.broker  # type: ignore[attr-defined]
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"boot-{self.dir.name}")
        self._broker_boot = pool.submit(broker.start)
        pool.shutdown(wait=False)

        def stop_broker() -> None:
            with contextlib.suppress(Exception):
                self._broker_boot.result()  # type: ignore[union-attr]
            broker.stop()

        self._stops.append(stop_broker)

    def _broker_booted(self) -> None:
        assert self._broker_boot is not None
        self._broker_boot.result()

    @contextlib.contextmanager
    def booting(self) -> Iterator[_Stack]:
        """``boot_broker()`` now, and stop whatever was started however the block ends:
        lets the trailer's broker boot while the data centre starts up."""
        self.boot_broker()
        try:
            yield self
        finally:
            self.stop()

    def log_files(self) -> list[Path]:
        """The logs of our own services (not of the PACS, Kafka or the NBSS stand-in)."""
        return sorted(self.logs.glob("*.log"))

    def stop(self) -> None:
        def terminate(service: Service) -> None:
            try:
                service.proc.terminate(timeout=15)
            except Exception:  # stop everything even if one refuses
                service.kill9()

        # All at once: each drains its in-flight work in parallel with the others.
        with ThreadPoolExecutor(max_workers=max(1, len(self.services))) as pool:
            list(pool.map(terminate, self.services.values()))
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()
        self._broker_boot = None

    def start(self) -> None:
        raise NotImplementedError

    def _runtime_args(self) -> dict[str, object]:
        """How this site's services start (``_start_service``'s runtime and mount)."""
        return {"runtime": self.runtime, "mount": self.dir.parent, "site_env": self.site_env}

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a half-started site must not leave brokers or services behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class CentralStack(_Stack):
    """The data centre: Kafka, Orthanc, dev PKI + sealing key, ingest, fleet monitor."""

    def __init__(
        self,
        directory: Path,
        trailer_id: str = TRAILER_ID,
        ingest_env: dict[str, str] | None = None,
        tus_host: str = "127.0.0.1",
        fleet_env: dict[str, str] | None = None,
        other_trailers: Sequence[str] = (),
    ) -> None:
        """``tus_host``: where the ingest's HTTPS port listens (and what its certificate
        names besides localhost): 127.0.0.1, or the data-centre end of a
        :class:`~trailerlink_testing.trailerhost.TrailerHost`'s WAN. ``fleet_env``: more
        settings of the fleet monitor; ``other_trailers``: trailers its fleet list expects
        besides this stack's (none of them runs here)."""
        super().__init__(directory)
        self.trailer_id = trailer_id
        self.ingest_env = ingest_env or {}
        self.fleet_env = fleet_env or {}
        self.other_trailers = list(other_trailers)
        self.tus_host = tus_host
        self.pki = self.dir / "pki"
        self.broker = KafkaBroker(self.dir / "kafka")
        self.pacs = Orthanc(self.dir / "orthanc", ae_title=PACS_AE)
        self.sealing_private = self.dir / "sealing-private"
        self.sealing_public = self.dir / "sealing-public"
        self.tus_port = free_port()

    @property
    def ingest_url(self) -> str:
        return f"https://{self.tus_host}:{self.tus_port}"

    @property
    def ingest(self) -> Service:
        return self.services["ingest"]

    @property
    def fleet(self) -> Service:
        return self.services["fleet"]

    def issue_trailer_cert(self, trailer_id: str) -> tuple[Path, Path]:
        """A certificate of the dev CA for another trailer (tests: revoked, unknown)."""
        out = self.dir / f"pki-{trailer_id}"
        subprocess.run(
            [console_script("trailerlink-ingest"), "dev-ca", str(out), "--trailer", trailer_id],
            check=True,
            capture_output=True,
        )
        return out / f"{trailer_id}.crt", out / f"{trailer_id}.key"

    def start(self) -> None:
        self.boot_broker()
        self.pacs.start()
        self._stops.append(self.pacs.stop)
        subprocess.run(
            [
                console_script("trailerlink-ingest"),
                "dev-ca",
                str(self.pki),
                "--trailer",
                self.trailer_id,
                "--server-name",
                "localhost",
                "--server-ip",
                "127.0.0.1",
                *(["--server-ip", self.tus_host] if self.tus_host != "127.0.0.1" else []),
            ],
            check=True,
            capture_output=True,
        )
        key = OpeningKey.generate()
        self.sealing_private.mkdir(parents=True, exist_ok=True)
        self.sealing_public.mkdir(parents=True, exist_ok=True)
        (self.sealing_private / f"{key.key_id}.pem").write_bytes(key.to_pem())
        os.chmod(self.sealing_private / f"{key.key_id}.pem", 0o600)
        (self.sealing_public / f"{key.key_id}.pem").write_bytes(key.recipient.to_pem())
        self._broker_booted()
        _make_topics(self.broker.bootstrap, "central")
        self.services["ingest"] = _start_service(
            "ingest",
            "trailerlink-ingest",
            {
                "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                "TRAILERLINK_TUS_HOST": self.tus_host,
                "TRAILERLINK_TUS_PORT": str(self.tus_port),
                "TRAILERLINK_DATA_DIR": str(self.dir / "ingest" / "data"),
                "TRAILERLINK_STORAGE_DIR": str(self.dir / "ingest" / "storage"),
                "TRAILERLINK_LEDGER_SQLITE_PATH": str(self.dir / "ingest" / "ledger.sqlite3"),
                "TRAILERLINK_TLS_CERT_FILE": str(self.pki / "server.crt"),
                "TRAILERLINK_TLS_KEY_FILE": str(self.pki / "server.key"),
                "TRAILERLINK_TLS_CLIENT_CA_FILE": str(self.pki / "ca.crt"),
                "TRAILERLINK_ACCESS_LIST_FILE": str(self.pki / "access.json"),
                "TRAILERLINK_ACCESS_RELOAD_SECONDS": "0.5",
                "TRAILERLINK_SEALING_KEYS_DIR": str(self.sealing_private),
                "TRAILERLINK_PACS_HOST": "127.0.0.1",
                "TRAILERLINK_PACS_PORT": str(self.pacs.dicom_port),
                "TRAILERLINK_PACS_AE_TITLE": PACS_AE,
                "TRAILERLINK_PACS_TIMEOUT_SECONDS": "20",
                "TRAILERLINK_PACS_RETRY_INITIAL_SECONDS": "0.5",
                "TRAILERLINK_PACS_RETRY_MAX_SECONDS": "5",
                "TRAILERLINK_SHUTDOWN_GRACE_SECONDS": "5",
                **self.ingest_env,
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        fleet_file = self.dir / "fleet.yaml"
        fleet_file.write_text(f"trailers: [{', '.join([self.trailer_id, *self.other_trailers])}]\n")
        self.services["fleet"] = _start_service(
            "fleet",
            "trailerlink-monitor",
            {
                "TRAILERLINK_MODE": "fleet",
                "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                "TRAILERLINK_DATA_DIR": str(self.dir / "monitor"),
                "TRAILERLINK_FLEET_FILE": str(fleet_file),
                "TRAILERLINK_EVALUATE_INTERVAL_SECONDS": "1",
                **self.fleet_env,
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        _wait_all_ready(self.services.values())

    def write_access(self, allow: list[str], revoked: list[str] | None = None) -> None:
        """Replace the ingest's access list (it re-reads it within a second)."""
        path = self.pki / "access.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"allow": allow, "revoked": revoked or [], "revoked_serials": []})
        )
        os.replace(tmp, path)

    def pacs_dataset_sha256(self, sop_instance_uid: str) -> str | None:
        """SHA-256 of the dataset Orthanc stores under ``sop_instance_uid`` (None: absent)."""
        found = self.pacs.find_instance(sop_instance_uid)
        return dataset_sha256(self.pacs.instance_file(found)) if found else None


class TrailerStack(_Stack):
    """The trailer: Kafka, wlmscpfs upstream, worklist, gateway, codec, uplink, agent."""

    def __init__(
        self,
        directory: Path,
        central: CentralStack,
        bookings: list[Booking],
        *,
        ingest_url: str | None = None,
        uplink_env: dict[str, str] | None = None,
        canary_env: dict[str, str] | None = None,
        uplink_host: TrailerHost | None = None,
    ) -> None:
        """``uplink_host``: run the uplink inside that namespace (its 4G link can then be
        cut for real); its Kafka and HTTP port go over the host's LAN."""
        super().__init__(directory)
        self.uplink_host = uplink_host
        self.central = central
        self.bookings = bookings
        self.ingest_url = ingest_url or central.ingest_url
        self.uplink_env = uplink_env or {}
        # The monitor agent's synthetic canary, off unless given (its interval, deadline):
        # then the agent sends to this gateway as CANARY_AE, which the gateway allows.
        self.canary_env = canary_env
        self.broker = KafkaBroker(self.dir / "kafka")
        self.upstream = self._new_upstream()
        self.spool_key = self.dir / "spool.key"
        self.worklist_key = self.dir / "worklist.key"
        # Picked again by start(), right before use: a port free now may be taken by the
        # time a booting() trailer really starts (the data centre starts in between).
        self._pick_ports()

    def _new_upstream(self) -> Wlmscpfs:
        return Wlmscpfs(
            self.dir / "nbss", ae_title=UPSTREAM_AE, log_path=self.dir / "nbss-wlmscpfs.log"
        )

    def _pick_ports(self) -> None:
        self.commitment_port = free_port()
        self.gateway_port = free_port()
        self.worklist_port = free_port()

    @property
    def gateway(self) -> Service:
        return self.services["gateway"]

    @property
    def uplink(self) -> Service:
        return self.services["uplink"]

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.boot_broker()
        SpoolKey.generate().write_file(self.spool_key)
        if not self.worklist_key.exists():  # a restarted trailer reopens its cache
            SpoolKey.generate().write_file(self.worklist_key)
        self._broker_booted()
        _make_topics(self.broker.bootstrap, "trailer")
        self.upstream = self._new_upstream()
        self._pick_ports()
        for b in self.bookings:
            self.upstream.write(b.accession_number, _worklist_item(b, MODALITY_AE, SITE_CODE))
        self.upstream.start()
        self._stops.append(self.upstream.stop)
        common = {
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "TRAILERLINK_TRAILER_ID": self.central.trailer_id,
            "TRAILERLINK_DATA_DIR": str(self.dir / "data"),
        }
        pki = self.central.pki
        tid = self.central.trailer_id
        self.services["worklist"] = _start_service(
            "worklist",
            "trailerlink-worklist",
            {
                **common,
                "TRAILERLINK_DICOM_HOST": "127.0.0.1",
                "TRAILERLINK_DICOM_PORT": str(self.worklist_port),
                "TRAILERLINK_DICOM_AE_TITLE": WORKLIST_AE,
                "TRAILERLINK_SITE_CODE": SITE_CODE,
                "TRAILERLINK_STATION_AE_TITLES": MODALITY_AE,
                "TRAILERLINK_UPSTREAM": "dicom_mwl",
                "TRAILERLINK_UPSTREAM_MWL_HOST": "127.0.0.1",
                "TRAILERLINK_UPSTREAM_MWL_PORT": str(self.upstream.port),
                "TRAILERLINK_UPSTREAM_MWL_AE_TITLE": UPSTREAM_AE,
                "TRAILERLINK_UPSTREAM_POLL_SECONDS": "2",
                "TRAILERLINK_UPSTREAM_TIMEOUT_SECONDS": "5",
                "TRAILERLINK_WORKLIST_KEY_FILE": str(self.worklist_key),
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        self.services["gateway"] = _start_service(
            "gateway",
            "trailerlink-gateway",
            {
                **common,
                "TRAILERLINK_DICOM_HOST": "127.0.0.1",
                "TRAILERLINK_DICOM_PORT": str(self.gateway_port),
                "TRAILERLINK_DICOM_AE_TITLE": GATEWAY_AE,
                "TRAILERLINK_DICOM_ALLOWED_PEERS": (
                    MODALITY_AE if self.canary_env is None else f"{MODALITY_AE},{CANARY_AE}"
                ),
                "TRAILERLINK_SPOOL_KEY_FILE": str(self.spool_key),
                "TRAILERLINK_SPOOL_MIN_FREE_BYTES": str(256 * 1024 * 1024),
                "TRAILERLINK_COMMITMENT_PEERS": f"{MODALITY_AE}=127.0.0.1:{self.commitment_port}",
                "TRAILERLINK_COMMITMENT_REPLY": "new",
                "TRAILERLINK_COMMITMENT_RETRY_SECONDS": "2",
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        self.services["codec"] = _start_service(
            "codec",
            "trailerlink-codec",
            {
                **common,
                "TRAILERLINK_SPOOL_KEY_FILE": str(self.spool_key),
                "TRAILERLINK_SEALING_PUBLIC_KEYS": str(self.central.sealing_public),
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        inside: Sequence[str] = ()
        uplink_http_host = "127.0.0.1"
        if self.uplink_host is not None:
            self.uplink_host.relay_kafka(self.broker.port)
            inside, uplink_http_host = (
                self.uplink_host.run_inside(),
                self.uplink_host.lan_trailer_ip,
            )
        self.services["uplink"] = _start_service(
            "uplink",
            "trailerlink-uplink",
            {
                **common,
                "TRAILERLINK_INGEST_URL": self.ingest_url,
                "TRAILERLINK_CLIENT_CERT_FILE": str(pki / f"{tid}.crt"),
                "TRAILERLINK_CLIENT_KEY_FILE": str(pki / f"{tid}.key"),
                "TRAILERLINK_CA_FILE": str(pki / "ca.crt"),
                "TRAILERLINK_RECEIPTS_POLL_SECONDS": "1",
                "TRAILERLINK_PROBE_INTERVAL_SECONDS": "1",
                "TRAILERLINK_BACKOFF_MAX_SECONDS": "3",
                **self.uplink_env,
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
            prefix=inside,
            host=uplink_http_host,
        )
        uplink, worklist = self.services["uplink"], self.services["worklist"]
        self.services["agent"] = _start_service(
            "agent",
            "trailerlink-monitor",
            {
                **common,
                "TRAILERLINK_MODE": "agent",
                "TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS": "5",
                "TRAILERLINK_SPOOL_DIR": str(self.dir / "data"),
                "TRAILERLINK_SCRAPE_URLS": (
                    f"uplink={uplink.url('/metrics')},worklist={worklist.url('/metrics')}"
                ),
                "TRAILERLINK_RELAY_URL": self.central.fleet.url("/v1/events"),
                "TRAILERLINK_CLIENT_CERT_FILE": str(pki / f"{tid}.crt"),
                "TRAILERLINK_CLIENT_KEY_FILE": str(pki / f"{tid}.key"),
                "TRAILERLINK_CA_FILE": str(pki / "ca.crt"),
                "TRAILERLINK_RELAY_RETRY_MAX_SECONDS": "3",
                **(
                    {}
                    if self.canary_env is None
                    else {
                        "TRAILERLINK_CANARY_GATEWAY_HOST": "127.0.0.1",
                        "TRAILERLINK_CANARY_GATEWAY_PORT": str(self.gateway_port),
                        "TRAILERLINK_CANARY_GATEWAY_AE_TITLE": GATEWAY_AE,
                        "TRAILERLINK_CANARY_CALLING_AE_TITLE": CANARY_AE,
                        **self.canary_env,
                    }
                ),
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )
        _wait_all_ready(self.services.values())

    def backlog_objects(self) -> float:
        return self.uplink.metric("trailerlink_uplink_backlog_objects") + self.uplink.metric(
            "trailerlink_uplink_awaiting_receipt_objects"
        )


# --- the simulated modality ------------------------------------------------------------
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


def scan_logs_for(paths: list[Path], secrets: list[str]) -> dict[str, list[str]]:
    """Which ``secrets`` appear in which log file (empty dict: none)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_text(errors="replace")
        hits = [s for s in secrets if s and s in text]
        if hits:
            found[str(path)] = hits
    return found


def booking_secrets(bookings: list[Booking]) -> list[str]:
    """The patient-identifying values of ``bookings`` (names, NHS numbers, birth dates)."""
    out: list[str] = []
    for b in bookings:
        _family, _, given = b.patient_name.partition("^")
        out += [b.patient_name, given, b.patient_id, b.birth_date]
    return out


def unique_id() -> str:
    return uuid.uuid4().hex[:8]
