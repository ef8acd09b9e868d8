"""The trailer, :class:`TrailerStack`: its own Kafka broker, dcmtk ``wlmscpfs`` as the
Trust's worklist broker holding this site's synthetic clinic day, then the worklist,
gateway, codec, uplink and the monitor agent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trailerlink_crypto.atrest import SpoolKey

from trailerlink_testing.dcmtk import Wlmscpfs
from trailerlink_testing.kafka import KafkaBroker
from trailerlink_testing.ports import free_port
from trailerlink_testing.stack.central import CentralStack
from trailerlink_testing.stack.clinic import Booking, _worklist_item
from trailerlink_testing.stack.names import (
    CANARY_AE,
    GATEWAY_AE,
    MODALITY_AE,
    SITE_CODE,
    UPSTREAM_AE,
    WORKLIST_AE,
)
from trailerlink_testing.stack.processes import Service, _start_service, _wait_all_ready
from trailerlink_testing.stack.site import _make_topics, _Stack
from trailerlink_testing.trailerhost import TrailerHost


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
