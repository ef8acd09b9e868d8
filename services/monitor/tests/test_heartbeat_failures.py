"""Trailer-side failures reach the data centre: the heartbeat carries the dead letters of
every scraped trailer service and the uplink's failed objects (the central Prometheus
cannot scrape a trailer), and the fleet monitor exports both per trailer."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from trailerlink_events.messages import Heartbeat, new_meta
from trailerlink_monitor.agent.heartbeat import build_heartbeat, parse_metrics
from trailerlink_monitor.fleet.handler import FleetMonitor

UPLINK_PAGE = """\
# TYPE trailerlink_uplink_failed_objects gauge
trailerlink_uplink_failed_objects 4.0
# TYPE trailerlink_kafka_dead_letters_total counter
trailerlink_kafka_dead_letters_total{topic="trailerlink.trailer.object-sealed.v1"} 1.0
"""
CODEC_PAGE = """\
# TYPE trailerlink_kafka_dead_letters_total counter
trailerlink_kafka_dead_letters_total{topic="trailerlink.trailer.object-received.v1"} 2.0
trailerlink_kafka_dead_letters_total{topic="trailerlink.trailer.other.v1"} 0.0
"""


def test_the_heartbeat_carries_dead_letters_of_every_service_and_failed_objects(
    tmp_path: Path,
) -> None:
    pages = {"uplink": parse_metrics(UPLINK_PAGE), "codec": parse_metrics(CODEC_PAGE)}
    hb = build_heartbeat("trailer-07", 1, pages, tmp_path)
    assert hb.dead_letters == 3 and hb.failed_objects == 4
    quiet = build_heartbeat("trailer-07", 2, {"codec": parse_metrics(CODEC_PAGE)}, tmp_path)
    assert quiet.dead_letters == 2 and quiet.failed_objects == 0


def test_the_fleet_exports_them_per_trailer_from_the_first_heartbeat(tmp_path: Path) -> None:
    class Store:  # the heartbeat gauges need no store
        pass

    fleet = FleetMonitor(Store(), ["trailer-08"], deadline_seconds=3600)  # type: ignore[arg-type]
    # Known before any heartbeat: the first missed one is an increase from 0.
    assert _sample("trailerlink_monitor_heartbeats_missed_total", "trailer-08") == 0
    hb = Heartbeat(
        meta=new_meta("monitor", "trailer-08"), sequence=1, dead_letters=2, failed_objects=5
    )
    fleet._apply_heartbeat(hb, 1_700_000_000.0)
    assert _sample("trailerlink_monitor_trailer_dead_letters", "trailer-08") == 2
    assert _sample("trailerlink_monitor_trailer_failed_objects", "trailer-08") == 5


def _sample(name: str, trailer: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"trailer_id": trailer})
