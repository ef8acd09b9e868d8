"""Entry point of `trailerlink-monitor`.

Skeleton only: the service's function is issue #8. It already runs in the shared
service skeleton (health, readiness against Kafka, metrics, clean SIGTERM) so the
deployment and monitoring can be built against it, and it says plainly that it does
nothing yet.
"""

from __future__ import annotations

import logging

from pydantic import Field
from trailerlink_common.config import ServiceSettings, load_settings
from trailerlink_common.service import Service
from trailerlink_events.kafka import EventProducer

from trailerlink_monitor import __version__

log = logging.getLogger(__name__)


class MonitorSettings(ServiceSettings):
    service_name: str = "monitor"
    http_port: int = Field(9106, ge=1, le=65535)


def main() -> None:
    settings = load_settings(MonitorSettings)
    service = Service("monitor", settings, version=__version__)
    producer = EventProducer(settings.kafka_bootstrap_servers, client_id="monitor")

    async def connect(stop) -> None:
        if not await producer.connect(stop):
            return
        log.warning("trailerlink-monitor is a skeleton: no function yet (issue #8)")
        await stop.wait()

    service.add_task("kafka", connect)
    service.add_readiness_check("kafka", producer.check_reachable)
    service.on_stop(producer.stop)
    raise SystemExit(service.run())
