"""Fixtures for the ingest's tests against real peers: the ingest as a subprocess, tuspy
as the trailer's client (with client certificates from the dev CA), Orthanc as the
PACS, the session's Kafka broker, SQLite or a throwaway PostgreSQL as the ledger."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from trailerlink_events.topics import CENTRAL_UPLOAD_COMPLETED
from trailerlink_events.wire import decode_receipts_page
from trailerlink_ingest.devca import Issued, issue, make_ca
from trailerlink_ingest.metadata import UploadMetadata
from trailerlink_sealed import OpeningKey, seal
from trailerlink_sealed.testdata import MGSpec, write_mg_file
from trailerlink_spool.part10 import dataset_offset
from trailerlink_testing.kafka_reader import start_group_at_end
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get, http_ok
from trailerlink_testing.waiting import wait_until
from tusclient.client import TusClient

DIGITAL_MG = "1.2.840.10008.5.1.4.1.1.1.2"
TRAILERS = ("trailer-01", "trailer-02", "trailer-03")


# --- certificates ----------------------------------------------------------------------
@dataclass
class Pki:
    directory: Path
    ca: Issued
    certs: dict[str, tuple[str, str]] = field(default_factory=dict)
    serials: dict[str, str] = field(default_factory=dict)

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.crt")

    def cert(self, name: str) -> tuple[str, str]:
        return self.certs[name]

    def add(self, name: str, issued: Issued) -> None:
        crt, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        issued.write(crt, key)
        self.certs[name] = (str(crt), str(key))
        self.serials[name] = issued.serial_hex


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    ca.write(directory / "ca.crt", directory / "ca.key")
    result = Pki(directory, ca)
    result.add(
        "server",
        issue(ca, "localhost", server=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
    )
    for trailer in TRAILERS:
        result.add(trailer, issue(ca, trailer))
    now = dt.datetime.now(dt.UTC)
    result.add(
        "expired",
        issue(
            ca,
            "trailer-01",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        ),
    )
    result.add("not-listed", issue(ca, "trailer-99"))
    other = make_ca("some other CA")
    result.add("other-ca", issue(other, "trailer-01"))
    return result


@pytest.fixture(scope="session")
def sealing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OpeningKey]:
    directory = tmp_path_factory.mktemp("sealing-keys")
    key = OpeningKey.generate()
    (directory / f"{key.key_id}.pem").write_bytes(key.to_pem())
    return directory, key


# --- objects ---------------------------------------------------------------------------
@dataclass
class SealedObject:
    original: Path
    sealed: Path
    meta: UploadMetadata

    @property
    def metadata(self) -> dict[str, str]:
        """What tuspy sends as Upload-Metadata."""
        return {k: str(v) for k, v in self.meta.to_dict().items() if str(v) != ""}


def make_object(
    directory: Path,
    key: OpeningKey,
    *,
    spec: MGSpec | None = None,
    sop_uid: str | None = None,
    seed: int = 0,
) -> SealedObject:
    spec = spec or MGSpec(seed=seed)
    if sop_uid:
        spec.sop_uid = sop_uid
    directory.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex[:12]
    original = directory / f"{name}.dcm"
    write_mg_file(original, spec)
    sealed = directory / f"{name}.sealed"
    result = seal(original, sealed, key.recipient)
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
    return SealedObject(original, sealed, meta)


def dataset_sha256(part10: bytes) -> str:
    return hashlib.sha256(part10[dataset_offset(part10[:65536]) :]).hexdigest()


@pytest.fixture
def objects(tmp_path: Path, sealing_key: tuple[Path, OpeningKey]):
    counter = iter(range(10_000))

    def make(**kwargs: object) -> SealedObject:
        kwargs.setdefault("seed", next(counter))
        return make_object(tmp_path / "objects", sealing_key[1], **kwargs)  # type: ignore[arg-type]

    return make


# --- the ingest ------------------------------------------------------------------------
@dataclass
class Ingest:
    proc: ServiceProcess
    tus_port: int
    http_port: int
    root: Path
    pki: Pki
    access_file: Path
    env: dict[str, str]
    kafka_bootstrap: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.tus_port}/files/"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def client(self, cert: str = "trailer-01") -> TusClient:
        return TusClient(self.url, client_cert=self.pki.cert(cert))

    def upload(
        self,
        obj: SealedObject,
        cert: str = "trailer-01",
        chunk_size: int = 1 << 20,
        checksum: bool = True,
    ) -> str:
        uploader = self.client(cert).uploader(
            file_path=str(obj.sealed),
            chunk_size=chunk_size,
            metadata=obj.metadata,
            upload_checksum=checksum,
        )
        uploader.upload()
        return uploader.url.rsplit("/", 1)[-1]

    def session(self, cert: str = "trailer-01") -> requests.Session:
        s = requests.Session()
        s.cert = self.pki.cert(cert)
        s.verify = self.pki.ca_file
        s.headers["Tus-Resumable"] = "1.0.0"
        return s

    def receipts(self, cert: str = "trailer-01", after: int = 0) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        with self.session(cert) as s:
            while True:
                rsp = s.get(
                    f"https://127.0.0.1:{self.tus_port}/v1/receipts",
                    params={"after": after, "limit": 500},
                    timeout=10,
                )
                rsp.raise_for_status()
                page = decode_receipts_page(rsp.json())
                out += page.receipts
                if not page.more:
                    return out
                after = int(str(page.next_cursor))

    def wait_receipt(
        self, upload_id: str, cert: str = "trailer-01", timeout: float = 60
    ) -> dict[str, object]:
        def find() -> dict[str, object] | None:
            return next((r for r in self.receipts(cert) if r["upload_id"] == upload_id), None)

        return wait_until(find, timeout, f"a receipt for upload {upload_id}", interval=0.2)

    def write_access(
        self,
        allow: list[str],
        revoked: list[str] | None = None,
        revoked_serials: list[str] | None = None,
    ) -> None:
        tmp = self.access_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"allow": allow, "revoked": revoked or [], "revoked_serials": revoked_serials or []}
            )
        )
        os.replace(tmp, self.access_file)

    def metric(self, name: str) -> float:
        total = 0.0
        for line in http_get(f"http://127.0.0.1:{self.http_port}/metrics").splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.http_port}/readyz")

    def start(self) -> None:
        self.proc.start()
        wait_until(self.ready, 60, "ingest ready", interval=0.2)

    def log_text(self) -> str:
        path = self.root / "ingest.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_ingest(
    root: Path,
    pki: Pki,
    keys_dir: Path,
    kafka_bootstrap: str,
    pacs: Orthanc | None,
    *,
    ledger_dsn: str = "",
    extra_env: dict[str, str] | None = None,
) -> Ingest:
    root.mkdir(parents=True, exist_ok=True)
    access = root / "access.json"
    access.write_text(json.dumps({"allow": list(TRAILERS), "revoked": [], "revoked_serials": []}))
    tus_port, http_port = free_port(), free_port()
    env = {
        "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TRAILERLINK_HTTP_HOST": "127.0.0.1",
        "TRAILERLINK_HTTP_PORT": str(http_port),
        "TRAILERLINK_TUS_HOST": "127.0.0.1",
        "TRAILERLINK_TUS_PORT": str(tus_port),
        "TRAILERLINK_DATA_DIR": str(root / "data"),
        "TRAILERLINK_STORAGE_DIR": str(root / "storage"),
        "TRAILERLINK_LEDGER_SQLITE_PATH": str(root / "ledger.sqlite3"),
        "TRAILERLINK_LEDGER_DSN": ledger_dsn,
        "TRAILERLINK_TLS_CERT_FILE": pki.cert("server")[0],
        "TRAILERLINK_TLS_KEY_FILE": pki.cert("server")[1],
        "TRAILERLINK_TLS_CLIENT_CA_FILE": pki.ca_file,
        "TRAILERLINK_ACCESS_LIST_FILE": str(access),
        "TRAILERLINK_ACCESS_RELOAD_SECONDS": "0.2",
        "TRAILERLINK_SEALING_KEYS_DIR": str(keys_dir),
        "TRAILERLINK_CONSUMER_GROUP": f"ingest-{uuid.uuid4().hex[:8]}",
        "TRAILERLINK_PACS_HOST": "127.0.0.1",
        "TRAILERLINK_PACS_PORT": str(pacs.dicom_port if pacs else free_port()),
        "TRAILERLINK_PACS_AE_TITLE": pacs.ae_title if pacs else "PACS",
        "TRAILERLINK_PACS_TIMEOUT_SECONDS": "10",
        "TRAILERLINK_PACS_RETRY_INITIAL_SECONDS": "0.2",
        "TRAILERLINK_PACS_RETRY_MAX_SECONDS": "1",
        "TRAILERLINK_SHUTDOWN_GRACE_SECONDS": "5",
        **(extra_env or {}),
    }
    proc = ServiceProcess(
        [console_script("trailerlink-ingest")], env=env, log_path=root / "ingest.log"
    )
    ingest = Ingest(proc, tus_port, http_port, root, pki, access, env, kafka_bootstrap)
    if env["TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS"] != "127.0.0.1:9":
        # The session's topics are shared: this ingest must not process (and
        # dead-letter) the uploads other tests announced before it started.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run,
                start_group_at_end(
                    env["TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS"],
                    env["TRAILERLINK_CONSUMER_GROUP"],
                    [CENTRAL_UPLOAD_COMPLETED],
                ),
            ).result()
        ingest.start()
    else:  # no Kafka on purpose: not ready, but serving uploads
        proc.start()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/healthz"), 60, "ingest alive")
    return ingest


@pytest.fixture(scope="session", autouse=True)
def _trust_dev_ca(pki: Pki) -> Iterator[None]:
    """tuspy verifies the server with requests' default bundle: point it at the dev CA."""
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = pki.ca_file
    yield
    if before is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = before


@pytest.fixture(scope="session")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the tests that do not stop or reconfigure it."""
    with Orthanc(tmp_path_factory.mktemp("orthanc"), ae_title="PACS") as orthanc:
        yield orthanc


@pytest.fixture(scope="session")
def ingest(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    sealing_key: tuple[Path, OpeningKey],
    kafka_bootstrap: str,
    pacs: Orthanc,
) -> Iterator[Ingest]:
    """One ingest (SQLite ledger) shared by tests that leave it as they found it."""
    running = start_ingest(
        tmp_path_factory.mktemp("ingest"), pki, sealing_key[0], kafka_bootstrap, pacs
    )
    try:
        yield running
    finally:
        running.proc.terminate()


@pytest.fixture
def own_ingest(
    tmp_path: Path, pki: Pki, sealing_key: tuple[Path, OpeningKey], kafka_bootstrap: str
):
    """Start a private ingest (for tests that kill it or change its PACS)."""
    started: list[Ingest] = []

    def start(pacs: Orthanc | None, **kwargs: object) -> Ingest:
        running = start_ingest(
            tmp_path / f"ingest-{len(started)}",
            pki,
            sealing_key[0],
            kafka_bootstrap,
            pacs,
            **kwargs,
        )  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.running():
            running.proc.kill9()


@pytest.fixture(scope="session")
def stored_sha():
    """The dataset SHA-256 of what a PACS stores under a SOP Instance UID (or None)."""

    def lookup(pacs: Orthanc, sop_uid: str) -> str | None:
        found = pacs.find_instance(sop_uid)
        return dataset_sha256(pacs.instance_file(found)) if found else None

    return lookup
