"""Entry point of `trailerlink-monitor`: agent mode on a trailer, fleet mode centrally."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from trailerlink_common.config import ConfigError, load_settings
from trailerlink_common.service import Service, cannot_start, run_service
from trailerlink_common.sqlstore import DatabaseUnavailable
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, EventProducer, Handler, RetryPolicy

from trailerlink_monitor import __version__
from trailerlink_monitor.settings import MonitorSettings

if TYPE_CHECKING:
    from trailerlink_monitor.agent.canary import Canary

log = logging.getLogger(__name__)

__all__ = ["MonitorSettings", "main"]


def _agent(service: Service, settings: MonitorSettings, producer: EventProducer) -> None:
    from trailerlink_monitor.agent.heartbeat import (
        HeartbeatAgent,
        Relay,
        SequenceFile,
        client_ssl_context,
    )

    canary = _canary(service, settings, producer)
    agent = HeartbeatAgent(
        producer,
        settings.trailer_id,
        settings.heartbeat_interval_seconds,
        settings.scrape_targets(),
        settings.spool_dir,
        SequenceFile(settings.data_dir / "monitor" / "heartbeat-sequence"),
        {"client": settings.client_cert_file, "ca": settings.ca_file},
        canary,
    )
    service.add_task("heartbeat", agent.run)
    if settings.relay_url:
        relay = Relay(
            settings.relay_url,
            client_ssl_context(
                settings.client_cert_file, settings.client_key_file, settings.ca_file
            ),
            settings.trailer_id,
        )
        service.add_task(
            "relay",
            _trailer_runner(
                settings,
                producer,
                settings.relay_group,
                [topics.HEARTBEAT, topics.PROCEDURE_STEP, topics.OBJECT_RECEIVED],
                relay.handle,
                "monitor-relay",
                RetryPolicy(
                    initial_backoff_seconds=0.5,
                    max_backoff_seconds=settings.relay_retry_max_seconds,
                ),
            ).run,
        )


def _trailer_runner(
    settings: MonitorSettings,
    producer: EventProducer,
    group: str,
    names: list[str],
    handler: Handler,
    client_id: str,
    retry: RetryPolicy | None = None,
) -> ConsumerRunner:
    """A consumer of the trailer's own topics (dead letters stay on the trailer)."""
    return ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        topics=names,
        handler=handler,
        producer=producer,
        dead_letter_topic=topics.TRAILER_DEAD_LETTER,
        client_id=client_id,
        retry=retry or RetryPolicy(),
    )


def _canary(service: Service, settings: MonitorSettings, producer: EventProducer) -> Canary | None:
    """The synthetic canary and its reader of the trailer's delivery outcomes; None (no
    canary) when no gateway is configured."""
    if not settings.canary_gateway_host:
        return None
    from trailerlink_monitor.agent.canary import Canary, CanaryTarget  # pydicom: agent only

    canary = Canary(
        settings.trailer_id,
        CanaryTarget(
            settings.canary_gateway_host,
            settings.canary_gateway_port,
            settings.canary_gateway_ae_title,
            settings.canary_calling_ae_title,
        ),
        settings.canary_interval_seconds,
        settings.canary_timeout_seconds,
    )
    service.add_task(
        "canary-outcomes",
        _trailer_runner(
            settings,
            producer,
            settings.canary_group,
            [topics.OBJECT_DELIVERED, topics.OBJECT_FAILED],
            canary.handle,
            "monitor-canary",
        ).run,
    )
    service.add_task("canary", canary.run)
    return canary


def _fleet(service: Service, settings: MonitorSettings, producer: EventProducer) -> None:
    from trailerlink_monitor.fleet.api import add_fleet_routes
    from trailerlink_monitor.fleet.handler import FLEET_TOPICS, FleetMonitor, load_fleet
    from trailerlink_monitor.fleet.store import FleetStore

    dsn = settings.database_dsn()
    store = FleetStore(None if dsn else settings.state_path(), dsn=dsn)
    fleet = FleetMonitor(
        store,
        load_fleet(settings.fleet_file),
        settings.completeness_deadline_seconds,
        settings.audit_retention_days * 86400,
    )
    runner = ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        topics=list(FLEET_TOPICS),
        handler=fleet.handle,
        producer=producer,
        dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
        client_id="monitor",
    )

    async def connect(stop: asyncio.Event) -> None:
        await producer.connect(stop)
        await stop.wait()

    async def evaluate(stop: asyncio.Event) -> None:
        purged_at = 0.0
        while not stop.is_set():
            try:
                await asyncio.to_thread(fleet.evaluate)
                if time.time() - purged_at > 3600:
                    await asyncio.to_thread(fleet.purge)
                    purged_at = time.time()
            except DatabaseUnavailable as exc:  # /readyz says so; try again next round
                log.warning("fleet state not evaluated", extra={"error": str(exc)})
            await sleep_or_stop(stop, settings.evaluate_interval_seconds)

    async def close() -> None:
        store.close()

    async def database_ready() -> None:
        await asyncio.to_thread(store.check)

    service.add_readiness_check("database", database_ready)
    add_fleet_routes(service.app, fleet, producer, settings.relay_trailer_header)
    service.add_task("kafka", connect)
    service.add_task("consumer", runner.run)
    service.add_task("evaluate", evaluate)
    service.on_stop(close)


def _admin(service: Service, settings: MonitorSettings, producer: EventProducer) -> None:
    from trailerlink_events.deadletters import AuditStore, DeadLetters

    from trailerlink_monitor.admin_api import add_admin_routes

    audit = AuditStore(settings.data_dir / "monitor" / "admin-audit.sqlite")
    topic = topics.CENTRAL_DEAD_LETTER if settings.mode == "fleet" else topics.TRAILER_DEAD_LETTER
    add_admin_routes(
        service.app,
        DeadLetters(settings.kafka_bootstrap_servers, topic, audit, producer),
        settings.admin_token_file,
    )

    async def close() -> None:
        audit.close()

    service.on_stop(close)


def _build() -> Service:
    settings = load_settings(MonitorSettings)
    service = Service("monitor", settings, version=__version__)
    producer = EventProducer(settings.kafka_bootstrap_servers, client_id="monitor")
    if settings.mode == "fleet":
        _fleet(service, settings, producer)
    else:
        _agent(service, settings, producer)
    _admin(service, settings, producer)
    service.add_readiness_check("kafka", producer.check_reachable)
    service.on_stop(producer.stop)
    return service


def main() -> None:
    # An unreadable DSN file, a database that does not answer, a bad variable: say so
    # in one line, exit 2, no traceback.
    run_service(
        "monitor",
        _build,
        (ConfigError, DatabaseUnavailable, OSError, ValueError),
        describe=cannot_start,
    )
