"""The data centre, :class:`CentralStack`: its own Kafka (one broker, or a replicated
three-node cluster), Orthanc as the PACS, a development CA with one trailer certificate
(``trailerlink-ingest dev-ca``), a sealing key pair, the ingest (one, or several replicas
behind HAProxy sharing one storage directory and a PostgreSQL ledger) and the fleet
monitor."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from trailerlink_sealed import OpeningKey

from trailerlink_testing.haproxy import HAProxy
from trailerlink_testing.kafka import KafkaBroker, KafkaCluster
from trailerlink_testing.orthanc import Orthanc
from trailerlink_testing.ports import free_port
from trailerlink_testing.postgres import Postgres
from trailerlink_testing.procs import console_script
from trailerlink_testing.stack.modality import dataset_sha256
from trailerlink_testing.stack.names import PACS_AE, TRAILER_ID
from trailerlink_testing.stack.processes import Service, _start_service, _wait_all_ready
from trailerlink_testing.stack.site import _make_topics, _Stack

# The address HAProxy (http mode) connects to the replicas from: the only one whose
# Client-Cert header they believe.
BALANCER_SOURCE = "127.0.0.2"


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
        kafka_nodes: int = 1,
        ingest_replicas: int = 1,
        balancer: Literal["tcp", "http"] = "tcp",
        sealing_key: OpeningKey | None = None,
    ) -> None:
        """``tus_host``: where the ingest's HTTPS port listens (and what its certificate
        names besides localhost): 127.0.0.1, or the data-centre end of a
        :class:`~trailerlink_testing.trailerhost.TrailerHost`'s WAN. ``fleet_env``: more
        settings of the fleet monitor; ``other_trailers``: trailers its fleet list expects
        besides this stack's (none of them runs here). ``kafka_nodes``: 1, or 3 for the
        data centre's replicated cluster (:class:`~trailerlink_testing.kafka.KafkaCluster`:
        topics on three replicas, two in sync to acknowledge). ``ingest_replicas`` > 1:
        that many ingests, named ``ingest``, ``ingest-2``, ..., on one storage directory
        and a PostgreSQL ledger, behind :class:`~trailerlink_testing.haproxy.HAProxy`
        on ``tus_port``: ``balancer="tcp"`` passes TLS through (each replica terminates
        the trailer's mutual TLS), ``"http"`` terminates it there and passes the verified
        certificate in ``Client-Cert`` to replicas that trust only the balancer's
        address (the chart's ``tlsTermination: ingress``). ``sealing_key``: the data
        centre's key pair (default: a new one), so objects sealed once can be sent to
        several stacks."""
        super().__init__(directory)
        self.trailer_id = trailer_id
        self.ingest_env = ingest_env or {}
        self.fleet_env = fleet_env or {}
        self.other_trailers = list(other_trailers)
        self.tus_host = tus_host
        self.pki = self.dir / "pki"
        self.broker: KafkaBroker | KafkaCluster = (
            KafkaCluster(self.dir / "kafka", kafka_nodes)
            if kafka_nodes > 1
            else KafkaBroker(self.dir / "kafka")
        )
        self.pacs = Orthanc(self.dir / "orthanc", ae_title=PACS_AE)
        self.sealing_private = self.dir / "sealing-private"
        self.sealing_public = self.dir / "sealing-public"
        self.tus_port = free_port()
        self.ingest_replicas = ingest_replicas
        self.balancer_mode = balancer
        self.sealing_key = sealing_key
        self.replica_tus_ports: list[int] = []
        """Each replica's own tus port, behind the balancer (``ingest_replicas`` > 1)."""
        self.balancer: HAProxy | None = None
        self.ledger_db: Postgres | None = None

    @property
    def ingest_url(self) -> str:
        return f"https://{self.tus_host}:{self.tus_port}"

    @property
    def ingest(self) -> Service:
        return self.services["ingest"]

    @property
    def ingests(self) -> list[Service]:
        """Every ingest replica (one unless ``ingest_replicas`` said more)."""
        return [s for name, s in self.services.items() if name.split("-")[0] == "ingest"]

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
        key = self.sealing_key or OpeningKey.generate()
        self.sealing_private.mkdir(parents=True, exist_ok=True)
        self.sealing_public.mkdir(parents=True, exist_ok=True)
        (self.sealing_private / f"{key.key_id}.pem").write_bytes(key.to_pem())
        os.chmod(self.sealing_private / f"{key.key_id}.pem", 0o600)
        (self.sealing_public / f"{key.key_id}.pem").write_bytes(key.recipient.to_pem())
        self._broker_booted()
        if isinstance(self.broker, KafkaCluster):
            self.broker.create_topics("central")  # three replicas each, all in sync
        else:
            _make_topics(self.broker.bootstrap, "central")
        if self.ingest_replicas == 1:
            self._start_ingest("ingest", self.tus_host, self.tus_port, {})
        else:
            self.ledger_db = Postgres().start()
            self._stops.append(functools.partial(self.ledger_db.__exit__, None, None, None))
            ports = self.replica_tus_ports = [free_port() for _ in range(self.ingest_replicas)]
            replica_env = {"TRAILERLINK_LEDGER_DSN": self.ledger_db.dsn}
            if self.balancer_mode == "http":
                replica_env |= {
                    "TRAILERLINK_IDENTITY_SOURCE": "proxy-header",
                    "TRAILERLINK_TRUSTED_PROXIES": f"{BALANCER_SOURCE}/32",
                }
            for n, port in enumerate(ports, start=1):
                self._start_ingest(
                    "ingest" if n == 1 else f"ingest-{n}",
                    "127.0.0.1",
                    port,
                    replica_env,
                    data_dir=self.dir / "ingest" / f"data-{n}",
                )
            http = self.balancer_mode == "http"
            self.balancer = HAProxy(
                self.dir / "haproxy",
                [("127.0.0.1", p) for p in ports],
                port=self.tus_port,
                host=self.tus_host,
                mode=self.balancer_mode,
                server_pem=(self.pki / "server.crt", self.pki / "server.key") if http else None,
                client_ca=self.pki / "ca.crt" if http else None,
                source=BALANCER_SOURCE if http else None,
            ).start()
            self._stops.append(self.balancer.stop)
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

    def _start_ingest(
        self,
        name: str,
        host: str,
        port: int,
        extra_env: dict[str, str],
        data_dir: Path | None = None,
    ) -> None:
        """One ingest on ``host:port``; every replica shares the storage directory, the
        access list and the sealing keys (ReadWriteMany volumes in the chart)."""
        self.services[name] = _start_service(
            name,
            "trailerlink-ingest",
            {
                "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                "TRAILERLINK_TUS_HOST": host,
                "TRAILERLINK_TUS_PORT": str(port),
                "TRAILERLINK_DATA_DIR": str(data_dir or self.dir / "ingest" / "data"),
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
                **extra_env,
                **self.ingest_env,
            },
            self.logs,
            wait=False,
            **self._runtime_args(),
        )

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
