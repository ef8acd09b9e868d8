"""The operator's hold on a trailer reaches support: the heartbeat carries the uplink's
pause and caps (a paused trailer's link reads "up" while nothing leaves), and the fleet
monitor exports them per trailer with the link's state — up, degraded, down — which the
fleet board's table maps to words."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from trailerlink_events.messages import Heartbeat, LinkState, new_meta
from trailerlink_monitor.agent.heartbeat import build_heartbeat, parse_metrics
from trailerlink_monitor.fleet.handler import FleetMonitor

PAUSED_AND_CAPPED = """\
# TYPE trailerlink_uplink_paused gauge
trailerlink_uplink_paused 1.0
# TYPE trailerlink_uplink_operator_cap_bytes_per_second gauge
trailerlink_uplink_operator_cap_bytes_per_second 250000.0
# TYPE trailerlink_uplink_bandwidth_cap_bytes_per_second gauge
trailerlink_uplink_bandwidth_cap_bytes_per_second 125000.0
# TYPE trailerlink_uplink_link_state gauge
trailerlink_uplink_link_state{state="up"} 0.0
trailerlink_uplink_link_state{state="degraded"} 1.0
trailerlink_uplink_link_state{state="down"} 0.0
"""
SENDING = """\
# TYPE trailerlink_uplink_paused gauge
trailerlink_uplink_paused 0.0
# TYPE trailerlink_uplink_operator_cap_bytes_per_second gauge
trailerlink_uplink_operator_cap_bytes_per_second 0.0
# TYPE trailerlink_uplink_bandwidth_cap_bytes_per_second gauge
trailerlink_uplink_bandwidth_cap_bytes_per_second 0.0
"""


def test_the_heartbeat_carries_the_operators_pause_and_caps(tmp_path: Path) -> None:
    hb = build_heartbeat("trailer-09", 1, {"uplink": parse_metrics(PAUSED_AND_CAPPED)}, tmp_path)
    assert hb.uplink_paused is True
    assert hb.uplink_operator_cap_bytes_per_second == 250_000
    assert hb.uplink_cap_bytes_per_second == 125_000
    assert hb.link_state == LinkState.LINK_STATE_DEGRADED
    free = build_heartbeat("trailer-09", 2, {"uplink": parse_metrics(SENDING)}, tmp_path)
    assert free.uplink_paused is False
    assert free.uplink_operator_cap_bytes_per_second == free.uplink_cap_bytes_per_second == 0


def test_the_fleet_exports_pause_caps_and_link_state_per_trailer(tmp_path: Path) -> None:
    class Store:  # the heartbeat gauges need no store
        pass

    fleet = FleetMonitor(Store(), ["trailer-10"], deadline_seconds=3600)  # type: ignore[arg-type]
    hb = Heartbeat(
        meta=new_meta("monitor", "trailer-10"),
        sequence=1,
        uplink_paused=True,
        uplink_operator_cap_bytes_per_second=250_000,
        uplink_cap_bytes_per_second=125_000,
        link_state=LinkState.LINK_STATE_DEGRADED,
    )
    fleet._apply_heartbeat(hb, 1_700_000_000.0)
    assert _sample("trailerlink_monitor_trailer_uplink_paused", "trailer-10") == 1
    assert (
        _sample("trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second", "trailer-10")
        == 250_000
    )
    assert (
        _sample("trailerlink_monitor_trailer_uplink_cap_bytes_per_second", "trailer-10") == 125_000
    )
    assert _sample("trailerlink_monitor_trailer_link_state", "trailer-10") == 2
    assert _sample("trailerlink_monitor_trailer_link_up", "trailer-10") == 1  # degraded is up
    hb = Heartbeat(
        meta=new_meta("monitor", "trailer-10"), sequence=2, link_state=LinkState.LINK_STATE_DOWN
    )
    fleet._apply_heartbeat(hb, 1_700_000_060.0)
    assert _sample("trailerlink_monitor_trailer_uplink_paused", "trailer-10") == 0
    assert _sample("trailerlink_monitor_trailer_link_state", "trailer-10") == 3


def _sample(name: str, trailer: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"trailer_id": trailer})
