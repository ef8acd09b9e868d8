"""Entry point of `trailerlink-uplink`: object-sealed in, tus uploads out, receipts back.

Tasks: the object-sealed consumer (into the durable queue), the upload workers, the
link probe, the receipts poller, the janitor and a metrics refresher. Readiness means
Kafka answers and the queue is writable; a down link is *not* unreadiness (the uplink
is doing its job by holding the backlog), it is the link-state metric.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from trailerlink_common.config import ConfigError, load_settings
from trailerlink_common.service import Service, disk_writable_check, run_service
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events.kafka import ConsumerRunner, EventProducer
from trailerlink_events.topics import OBJECT_SEALED, TRAILER_DEAD_LETTER

from trailerlink_uplink import __version__, metrics
from trailerlink_uplink.admin_api import Resender, add_admin_routes, add_resend_route
from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket, parse_schedule
from trailerlink_uplink.control import OperatorControl
from trailerlink_uplink.handler import SealedHandler
from trailerlink_uplink.janitor import Janitor
from trailerlink_uplink.keysync import KeySync
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import SendQueue
from trailerlink_uplink.receipts import ReceiptPoller
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.settings import UplinkSettings
from trailerlink_uplink.tus import TusClient, make_http_client, tls_context

log = logging.getLogger(__name__)

__all__ = ["UplinkSettings", "main"]


def _verify(settings: UplinkSettings) -> object:
    if not settings.ingest_url.startswith("https://"):
        log.warning("ingest URL is not HTTPS: test set-ups only")
        return False
    for path in (settings.client_cert_file, settings.client_key_file, settings.ca_file):
        if not Path(path).exists():
            raise ConfigError(f"TLS file missing: {path} (client certificate, key and CA)")
    return tls_context(settings.ca_file, settings.client_cert_file, settings.client_key_file)


async def _refresh_metrics(
    queue: SendQueue, sender: Sender, bucket: TokenBucket, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        backlog = await asyncio.to_thread(queue.backlog)
        metrics.BACKLOG_OBJECTS.set(backlog.objects)
        metrics.BACKLOG_BYTES.set(backlog.bytes)
        metrics.OLDEST_UNSENT_AGE.set(
            max(0.0, time.time() - backlog.oldest_received_at) if backlog.oldest_received_at else 0
        )
        metrics.AWAITING_RECEIPT.set(backlog.awaiting_receipt)
        metrics.FAILED_OBJECTS.set(backlog.failed)
        metrics.GOODPUT.set(sender.goodput.rate())
        metrics.BANDWIDTH_CAP.set(bucket.rate_now())
        if bucket.control is not None:
            metrics.PAUSED.set(1 if bucket.control.paused_now() else 0)
            metrics.OPERATOR_CAP.set(bucket.control.cap_now() or 0)
        await sleep_or_stop(stop, 2.0)


def _report_cannot_start(message: str) -> None:
    """The uplink says it cannot start as one of its JSON log lines ("cannot start",
    the reason in ``error``). A bad variable fails before Service() has set up logging:
    then the plain ``trailerlink-uplink: <message>`` line, not a bare "cannot start"."""
    if logging.getLogger().handlers:
        log.error("cannot start", extra={"error": message})
    else:
        print(f"trailerlink-uplink: {message}", file=sys.stderr)


def main() -> None:
    run_service("uplink", _build, report=_report_cannot_start)


def _build() -> Service:
    settings = load_settings(UplinkSettings)
    service = Service("uplink", settings, version=__version__)
    try:
        verify = _verify(settings)
        schedule = CapSchedule(
            settings.bandwidth_cap_bytes_per_second,
            parse_schedule(settings.bandwidth_schedule),
            settings.timezone,
        )
    except (ValueError, OSError) as exc:  # an unreadable TLS file, a bad schedule
        raise ConfigError(str(exc)) from None

    queue = SendQueue(settings.resolved_queue_path())
    control = OperatorControl(settings.resolved_queue_path().parent / "operator-control.json")
    bucket = TokenBucket(schedule, control=control)
    add_admin_routes(service.app, control, bucket, settings.admin_token_file)
    http = make_http_client(
        verify=verify,  # type: ignore[arg-type]
        connect_timeout=settings.connect_timeout_seconds,
        io_timeout=settings.io_timeout_seconds,
        max_connections=2 * settings.concurrency + 2,
        keepalive_seconds=settings.tcp_keepalive_seconds,
        user_timeout_seconds=settings.tcp_user_timeout_seconds,
    )
    tus = TusClient(settings.tus_url(), http, bucket, on_sent=metrics.SENT_BYTES.inc)

    async def probe() -> None:
        await tus.discover()

    link = LinkMonitor(probe, settings.probe_interval_seconds)
    sender = Sender(
        queue,
        tus,
        link,
        settings.resolved_outgoing_dir(),
        trailer_id=settings.trailer_id,
        chunk_size=settings.chunk_size_bytes,
        concurrency=settings.concurrency,
        backoff_initial=settings.backoff_initial_seconds,
        backoff_max=settings.backoff_max_seconds,
    )
    keysync = (
        KeySync(
            http,
            settings.resolved_keys_url(),
            settings.sealing_keys_sync_dir,
            queue,
            settings.keys_poll_seconds,
        )
        if settings.sealing_keys_sync_dir is not None
        else None
    )
    add_resend_route(
        service.app,
        Resender(
            queue,
            settings.resolved_outgoing_dir(),
            settings.resolved_spool_dir(),
            held_keys=(lambda: keysync.held) if keysync is not None else lambda: None,
        ),
        sender.wake,
        settings.admin_token_file,
    )
    producer = EventProducer(
        settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id or "uplink"
    )
    sender.publisher = producer  # ObjectFailed for sealed files that cannot be sent
    handler = SealedHandler(queue, sender.wake)
    consumer = ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        topics=[OBJECT_SEALED],
        handler=handler.handle,
        producer=producer,
        dead_letter_topic=TRAILER_DEAD_LETTER,
        client_id=settings.kafka_client_id or "uplink",
    )
    receipts = ReceiptPoller(
        http,
        settings.resolved_receipts_url(),
        queue,
        producer,
        settings.trailer_id,
        settings.receipts_poll_seconds,
    )
    janitor = Janitor(
        queue,
        settings.resolved_outgoing_dir(),
        settings.resolved_spool_dir(),
        retention_seconds=settings.retention_days * 86400,
        pressure_free_fraction=settings.disk_pressure_free_fraction,
    )

    async def kafka(stop: asyncio.Event) -> None:
        if not await producer.connect(stop):
            return
        await asyncio.gather(consumer.run(stop), receipts.run(stop))

    if keysync is not None:
        service.add_task("keysync", keysync.run)
    service.add_task("kafka", kafka)
    service.add_task("sender", sender.run)
    service.add_task("link-probe", link.run_probe)
    service.add_task("janitor", lambda stop: janitor.run(stop, settings.janitor_interval_seconds))
    service.add_task("metrics", lambda stop: _refresh_metrics(queue, sender, bucket, stop))
    service.add_readiness_check("kafka", producer.check_reachable)
    service.add_readiness_check("queue-disk", disk_writable_check(queue.path.parent))

    async def close() -> None:
        await http.aclose()
        await producer.stop()
        queue.close()

    service.on_stop(close)
    return service
