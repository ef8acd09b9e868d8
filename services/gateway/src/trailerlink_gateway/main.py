"""Entry point of ``trailerlink-gateway``: wire settings, spool, DICOM and Kafka together.

Readiness (``/readyz``) means "a modality can store here now": the DICOM listener is
up and the spool disk takes writes. Kafka is deliberately *not* a readiness check: an
unready pod is taken out of its Service, and the modality must be able to store while
the broker is down (the outbox catches up). Kafka's state shows in
``trailerlink_outbox_kafka_connected`` and ``trailerlink_outbox_pending_events``.
"""

from __future__ import annotations

import asyncio
import logging

from trailerlink_common.config import ConfigError, load_settings
from trailerlink_common.service import Service, disk_writable_check, run_service
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_events.kafka import ConsumerRunner, EventProducer, RetryPolicy
from trailerlink_events.topics import OBJECT_DELIVERED, OBJECT_FAILED, TRAILER_DEAD_LETTER
from trailerlink_spool.index import SpoolIndex
from trailerlink_spool.layout import SpoolLayout
from trailerlink_spool.outbox import OutboxPublisher

from trailerlink_gateway import __version__
from trailerlink_gateway.access import PeerPolicy, parse_commitment_peers
from trailerlink_gateway.commitment import CommitmentStore
from trailerlink_gateway.committer import Committer
from trailerlink_gateway.intake import Intake
from trailerlink_gateway.scp import DicomGateway, DicomReporter, server_tls_context
from trailerlink_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

GAUGE_REFRESH_SECONDS = 15.0
COMMITMENT_CONSUMER_GROUP = "gateway-commitment"


def build(settings: GatewaySettings) -> Service:
    """Assemble the service (raises ConfigError for unusable settings)."""
    service = Service("gateway", settings, version=__version__)
    try:
        key = SpoolKey.from_file(settings.spool_key_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"TRAILERLINK_SPOOL_KEY_FILE: cannot load the spool key ({type(exc).__name__})"
        ) from None
    try:
        policy = PeerPolicy.from_text(
            settings.dicom_ae_title,
            settings.dicom_allowed_peers,
            settings.dicom_require_called_ae_title,
        )
        peers = parse_commitment_peers(settings.commitment_peers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not policy.rules:
        log.warning("TRAILERLINK_DICOM_ALLOWED_PEERS is empty: every association is refused")
    tls = None
    if settings.dicom_tls_cert_file is not None:
        if settings.dicom_tls_key_file is None:
            raise ConfigError("TRAILERLINK_DICOM_TLS_KEY_FILE is required with a certificate")
        tls = server_tls_context(
            settings.dicom_tls_cert_file, settings.dicom_tls_key_file, settings.dicom_tls_ca_file
        )

    layout = SpoolLayout(settings.resolved_spool_dir())
    layout.root.mkdir(parents=True, exist_ok=True)
    index = SpoolIndex(layout)
    client_id = settings.kafka_client_id or "gateway"
    publisher = OutboxPublisher(
        index.outbox, settings.kafka_bootstrap_servers, service="gateway", client_id=client_id
    )
    intake = Intake(
        layout=layout,
        index=index,
        key=key,
        trailer_id=settings.trailer_id,
        min_free_bytes=settings.spool_min_free_bytes,
        publisher=publisher,
        publish_wait_seconds=settings.publish_wait_seconds,
    )
    intake.recover()  # before the listener opens: nothing is being received yet

    store = CommitmentStore(settings.state_dir() / "commitment.sqlite")
    reporter = DicomReporter(
        settings.dicom_ae_title, peers, same_association=settings.commitment_reply == "same-or-new"
    )
    committer = Committer(
        store,
        index,
        reporter,
        deadline_seconds=settings.commitment_deadline_seconds,
        retry_seconds=settings.commitment_retry_seconds,
        retention_seconds=settings.commitment_retention_days * 86400,
    )
    gateway = DicomGateway(settings, intake, committer, reporter, policy, tls)

    dead_letters = EventProducer(settings.kafka_bootstrap_servers, client_id=client_id)
    runner = ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=COMMITMENT_CONSUMER_GROUP,
        topics=[OBJECT_DELIVERED, OBJECT_FAILED],
        handler=committer.on_delivery_event,
        producer=dead_letters,
        dead_letter_topic=TRAILER_DEAD_LETTER,
        retry=RetryPolicy(),
        client_id=client_id,
    )

    async def deliveries(stop: asyncio.Event) -> None:
        # The dead-letter producer needs a broker; so does the consumer. Wait for one.
        if await dead_letters.connect(stop, max_backoff_seconds=10.0):
            await runner.run(stop)

    async def gauges(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(intake.refresh_gauges)
            except Exception as exc:
                log.warning("spool gauges not refreshed", extra={"error": type(exc).__name__})
            await sleep_or_stop(stop, GAUGE_REFRESH_SECONDS)

    service.add_task("dicom", gateway.run)
    service.add_task("outbox", publisher.run)
    service.add_task("commitment", committer.run)
    service.add_task("deliveries", deliveries)
    service.add_task("gauges", gauges)
    service.add_readiness_check("dicom", gateway.readiness)
    service.add_readiness_check("spool", disk_writable_check(layout.root))
    service.on_stop(dead_letters.stop)
    return service


def main() -> None:
    run_service("gateway", lambda: build(load_settings(GatewaySettings)))


if __name__ == "__main__":
    main()
