"""`trailerlinkctl trailer enrol|revoke` against a real ingest (mTLS tus port, access list
it re-reads): the enrolled certificate from the printed Secret can create an upload; after
revoke it cannot. Bad names, a second enrol and unknown trailers change nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from trailerlink_events.topics import CENTRAL_UPLOAD_COMPLETED
from trailerlink_ingest.devca import issue, make_ca
from trailerlink_sealed import OpeningKey
from trailerlink_testing.kafka_reader import start_group_at_end
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script
from trailerlink_testing.waiting import wait_until

from .conftest import Ctl

pytestmark = pytest.mark.kafka


@dataclass
class RunningIngest:
    http: str
    tus: str
    ca_file: Path
    access_file: Path
    key_id: str


@pytest.fixture
def ingest(tmp_path: Path, kafka_bootstrap: str, token_file: Path) -> Iterator[RunningIngest]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca()
    ca.write(pki / "ca.crt", pki / "ca.key")
    issue(ca, "localhost", server=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
        pki / "server.crt", pki / "server.key"
    )
    keys = tmp_path / "keys"
    keys.mkdir()
    key = OpeningKey.generate()
    (keys / f"{key.key_id}.pem").write_bytes(key.to_pem())
    access = tmp_path / "access.json"
    access.write_text(json.dumps({"allow": ["trailer-01"], "revoked": [], "revoked_serials": []}))
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    asyncio.run(start_group_at_end(kafka_bootstrap, group, [CENTRAL_UPLOAD_COMPLETED]))
    http_port, tus_port = free_port(), free_port()
    proc = ServiceProcess(
        [console_script("trailerlink-ingest")],
        env={
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(http_port),
            "TRAILERLINK_TUS_HOST": "127.0.0.1",
            "TRAILERLINK_TUS_PORT": str(tus_port),
            "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
            "TRAILERLINK_STORAGE_DIR": str(tmp_path / "storage"),
            "TRAILERLINK_LEDGER_SQLITE_PATH": str(tmp_path / "ledger.sqlite3"),
            "TRAILERLINK_TLS_CERT_FILE": str(pki / "server.crt"),
            "TRAILERLINK_TLS_KEY_FILE": str(pki / "server.key"),
            "TRAILERLINK_TLS_CLIENT_CA_FILE": str(pki / "ca.crt"),
            "TRAILERLINK_ACCESS_LIST_FILE": str(access),
            "TRAILERLINK_ACCESS_RELOAD_SECONDS": "0.2",
            "TRAILERLINK_SEALING_KEYS_DIR": str(keys),
            "TRAILERLINK_CONSUMER_GROUP": group,
            "TRAILERLINK_PACS_HOST": "127.0.0.1",
            "TRAILERLINK_PACS_PORT": str(free_port()),
            "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
            "TRAILERLINK_ENROL_CA_CERT_FILE": str(pki / "ca.crt"),
            "TRAILERLINK_ENROL_CA_KEY_FILE": str(pki / "ca.key"),
            "TRAILERLINK_SHUTDOWN_GRACE_SECONDS": "5",
        },
        log_path=tmp_path / "ingest.log",
    )
    with proc:
        base = f"http://127.0.0.1:{http_port}"
        proc.wait_ready(f"{base}/readyz", timeout=90)
        yield RunningIngest(
            base, f"https://127.0.0.1:{tus_port}/files/", pki / "ca.crt", access, key.key_id
        )


def _create_upload(ingest: RunningIngest, cert: tuple[str, str]) -> int:
    """POST a tus creation with ``cert``; the HTTP status."""
    meta = {
        "sop_instance_uid": "2.25.1",
        "study_instance_uid": "2.25.2",
        "dataset_sha256": "0" * 64,
        "sealed_size": "1000",
        "key_id": ingest.key_id,
    }
    header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
    # verify= per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
    return requests.post(
        ingest.tus,
        cert=cert,
        verify=str(ingest.ca_file),
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1000", "Upload-Metadata": header},
        timeout=10,
    ).status_code


def _secret_files(manifest: str, directory: Path) -> tuple[str, str]:
    data = {}
    for line in manifest.splitlines():
        for name in ("tls.crt", "tls.key", "ca.crt"):
            if line.strip().startswith(name + ":"):
                data[name] = base64.b64decode(line.split(":", 1)[1].strip())
    (directory / "tls.crt").write_bytes(data["tls.crt"])
    (directory / "tls.key").write_bytes(data["tls.key"])
    return str(directory / "tls.crt"), str(directory / "tls.key")


def test_enrolled_trailer_uploads_and_revoked_one_cannot(
    ingest: RunningIngest, token_file: Path, tmp_path: Path
) -> None:
    ctl = Ctl(
        {"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_INGEST_URL": ingest.http}
    )
    enrolled = ctl("trailer", "enrol", "trailer-42", "--json")
    assert enrolled.code == 0, enrolled.err
    doc = enrolled.json()
    assert doc["trailer_id"] == "trailer-42" and doc["serial"] and doc["not_after"]
    assert "kind: Secret" in doc["secret_manifest"]
    assert "trailer-42" in json.loads(ingest.access_file.read_text())["allow"]
    cert = _secret_files(doc["secret_manifest"], tmp_path)

    wait_until(lambda: _create_upload(ingest, cert) == 201, 10, "enrolled trailer uploads")
    before = ingest.access_file.read_text()
    assert ctl("trailer", "enrol", "trailer-42").code == 6  # enrolled already
    assert ctl("trailer", "enrol", "Trailer 42").code == 2
    assert ctl("trailer", "revoke", "trailer-nobody").code == 3
    assert ctl("trailer", "enrol", "trailer-43", token=False).code == 4
    assert ingest.access_file.read_text() == before

    revoked = ctl("trailer", "revoke", "trailer-42", "--json")
    assert revoked.code == 0 and revoked.json() == {"trailer_id": "trailer-42", "revoked": True}
    wait_until(lambda: _create_upload(ingest, cert) == 403, 10, "revoked trailer refused")
    assert ctl("trailer", "enrol", "trailer-42").code == 6  # a revoked name stays revoked
