"""Entry point of ``trailerlink-ingest``.

``trailerlink-ingest`` serves; ``trailerlink-ingest dev-ca DIR ...`` issues development
certificates (see :mod:`trailerlink_ingest.devca`).

One process runs: the plain-HTTP service port (health, readiness, metrics), the HTTPS
tus + receipts port (a second uvicorn server, as a Service task), the Kafka consumer
that processes completed uploads, and the sweeper.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys

from trailerlink_common.config import ConfigError, load_settings
from trailerlink_common.service import Service, cannot_start, disk_writable_check, run_service
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, EventProducer, RetryPolicy

from trailerlink_ingest import __version__
from trailerlink_ingest.admin_api import add_admin_routes
from trailerlink_ingest.commitment import CommitmentFinisher, CommitmentListener
from trailerlink_ingest.completion import Announcer, Sweeper
from trailerlink_ingest.https_app import build_tus_app
from trailerlink_ingest.identity import AccessListFile, Authenticator, parse_networks
from trailerlink_ingest.keys import KeyStore
from trailerlink_ingest.keys_admin import KeyStatus, add_key_admin_routes
from trailerlink_ingest.ledger import Ledger
from trailerlink_ingest.pacs import PacsTarget
from trailerlink_ingest.processor import Processor
from trailerlink_ingest.settings import IngestSettings
from trailerlink_ingest.tlsserver import (
    build_https_server,
    dead_peer_socket_options,
    serve_until,
    server_ssl_context,
)
from trailerlink_ingest.tus import TusConfig
from trailerlink_ingest.uploads import UploadStore

log = logging.getLogger(__name__)


def build(settings: IngestSettings) -> Service:
    """The whole ingest as a Service (tests run it in-process or as a subprocess)."""
    service = Service("ingest", settings, version=__version__)
    producer = EventProducer(
        settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id or "ingest"
    )
    store = UploadStore(settings.storage_dir)
    store.uploads.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(dsn=settings.ledger_dsn, sqlite_path=settings.ledger_sqlite_path)
    keyring = KeyStore(settings.sealing_keys_dir, settings.storage_dir)
    access = AccessListFile(settings.access_list_file, settings.access_reload_seconds)
    access.reload()
    auth = Authenticator(access, settings.tls_client_ca_file)
    add_admin_routes(
        service.app,
        settings.access_list_file,
        settings.enrol_ca_cert_file,
        settings.enrol_ca_key_file,
        settings.admin_token_file,
    )
    announcer = Announcer(store, producer)
    cfg = TusConfig(
        base_path=settings.tus_base_path,
        max_size=settings.max_object_bytes,
        max_concurrent_uploads=settings.max_concurrent_uploads,
        requests_per_second=settings.max_requests_per_second,
        burst=settings.request_burst,
        expiry_seconds=settings.upload_expiry_seconds,
        identity_source=settings.identity_source,
        trusted_proxies=parse_networks(settings.trusted_proxies),
        client_cert_header=settings.client_cert_header.lower(),
        key_ids=keyring,
        body_idle_seconds=settings.body_idle_timeout_seconds,
    )
    add_key_admin_routes(
        service.app,
        KeyStatus(keyring, store, ledger, access, settings.key_retire_settle_seconds),
        settings.admin_token_file,
    )
    tus_app = build_tus_app(
        store=store, auth=auth, ledger=ledger, announcer=announcer, cfg=cfg, keys=keyring
    )
    context = (
        server_ssl_context(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
        if settings.identity_source == "tls"
        else None
    )
    https = build_https_server(
        tus_app,
        settings.tus_host,
        settings.tus_port,
        context,
        socket_options=dead_peer_socket_options(
            settings.tcp_keepalive_seconds, settings.tcp_user_timeout_seconds
        ),
        head_deadline_seconds=settings.request_head_timeout_seconds,
    )
    processor = Processor(
        uploads=store,
        ledger=ledger,
        keys=keyring,
        pacs=PacsTarget(
            settings.pacs_host,
            settings.pacs_port,
            settings.pacs_ae_title,
            settings.calling_ae_title,
            settings.pacs_timeout_seconds,
            settings.pacs_max_pdu,
            settings.pacs_allow_lossless_fallback,
            canary_ae_title=settings.pacs_canary_ae_title,
        ),
        producer=producer,
        work_dir=settings.data_dir / "work",
        keep_delivered=settings.keep_delivered_uploads,
        storage_commitment=settings.pacs_storage_commitment,
    )
    runner = ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        topics=[topics.CENTRAL_UPLOAD_COMPLETED],
        handler=processor.handle,
        producer=producer,
        dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
        retry=RetryPolicy(
            max_attempts=5,
            initial_backoff_seconds=settings.pacs_retry_initial_seconds,
            max_backoff_seconds=settings.pacs_retry_max_seconds,
        ),
        client_id="ingest",
    )
    sweeper = Sweeper(store, announcer, access, settings.upload_expiry_seconds, ledger=ledger)

    async def kafka(stop: asyncio.Event) -> None:
        if not await producer.connect(stop):
            return
        await runner.run(stop)

    async def https_task(stop: asyncio.Event) -> None:
        await serve_until(https, stop)

    async def ledger_ready() -> None:
        await asyncio.to_thread(ledger.check)

    if settings.pacs_storage_commitment:
        listener = CommitmentListener(
            ledger, settings.calling_ae_title, settings.commitment_host, settings.commitment_port
        )
        listener.start()  # binds now: a port in use fails the start, loudly
        finisher = CommitmentFinisher(
            ledger, processor, processor.pacs, settings.commitment_timeout_seconds
        )
        service.add_task("commitment", finisher.run)
        service.on_stop(lambda: asyncio.to_thread(listener.stop))
    ledger.migrate()
    service.add_task("https", https_task)
    service.add_task("kafka", kafka)
    service.add_task("sweeper", sweeper.run)
    service.add_readiness_check("kafka", producer.check_reachable)
    service.add_readiness_check("ledger", ledger_ready)
    service.add_readiness_check("storage", disk_writable_check(store.uploads))
    service.on_stop(producer.stop)
    return service


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "dev-ca":
        from trailerlink_ingest.devca import main as devca_main

        raise SystemExit(devca_main(args[1:]))
    # A missing certificate, key directory or bad DSN: say which, without a traceback.
    run_service(
        "ingest",
        lambda: build(load_settings(IngestSettings)),
        (ConfigError, OSError, ssl.SSLError, ValueError),
        describe=cannot_start,
    )
