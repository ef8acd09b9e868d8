"""Agent mode through the real broker: heartbeats queue on the trailer while the data
centre is unreachable and all arrive, in order, once it answers; a trailer that never
reports is seen as silent."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from trailerlink_monitor.agent import certificate_not_after
from trailerlink_testing.ports import free_port
from trailerlink_testing.scrape import sample
from trailerlink_testing.waiting import wait_until

from .conftest import make_certificate


def test_heartbeats_queued_offline_arrive_after_reconnection(
    start_monitor, tmp_path: Path
) -> None:
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    silent = f"trailer-{uuid.uuid4().hex[:6]}"
    fleet_file = tmp_path / "trailers.yaml"
    fleet_file.write_text(f'trailers:\n  - "{trailer}"\n  - "{silent}"\n')
    fleet_port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    cert, _ = make_certificate(tmp_path, trailer, days=20)

    # The data centre is down: nothing listens on the fleet port yet.
    _, agent = start_monitor(
        "agent",
        TRAILERLINK_TRAILER_ID=trailer,
        TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS="0.2",
        TRAILERLINK_SPOOL_DIR=str(spool),
        TRAILERLINK_RELAY_URL=f"http://127.0.0.1:{fleet_port}/v1/events",
        TRAILERLINK_RELAY_GROUP=f"relay-{trailer}",
        TRAILERLINK_RELAY_RETRY_MAX_SECONDS="0.5",
        TRAILERLINK_CLIENT_CERT_FILE=str(cert),
    )
    wait_until(lambda: (sample(agent, "trailerlink_monitor_agent_heartbeats_total") or 0) >= 5
               and (sample(agent, "trailerlink_monitor_relay_failures_total") or 0) >= 2,
               30, "heartbeats queued while the data centre is unreachable")

    _, fleet = start_monitor("fleet", TRAILERLINK_HTTP_PORT=str(fleet_port),
                             TRAILERLINK_FLEET_FILE=str(fleet_file))
    queued = sample(agent, "trailerlink_monitor_agent_heartbeats_total") or 0
    wait_until(lambda: (sample(fleet, "trailerlink_monitor_heartbeats_total",
                               trailer_id=trailer) or 0) >= queued,
               60, "every queued heartbeat delivered")
    # Sequence 1..n arrived without a gap: none was lost while offline.
    assert sample(fleet, "trailerlink_monitor_heartbeats_missed_total", trailer_id=trailer) \
        in (None, 0.0)
    free = sample(fleet, "trailerlink_monitor_trailer_disk_free_bytes", trailer_id=trailer)
    assert free is not None and free > 0
    # The client certificate's notAfter came with the heartbeats.
    not_after = certificate_not_after(cert)
    assert not_after is not None
    assert sample(fleet, "trailerlink_monitor_trailer_certificate_expiry_timestamp_seconds",
                  trailer_id=trailer) == not_after
    body = httpx.get(f"{fleet}/v1/trailers").json()["trailers"]
    by_id = {t["trailer_id"]: t for t in body}
    assert by_id[trailer]["versions"]["monitor"] == "0.1.0"
    assert "last_heartbeat_at" not in by_id[silent]

    # The silent trailer: expected, never heard from, its silence counted.
    assert sample(fleet, "trailerlink_monitor_trailer_expected", trailer_id=silent) == 1
    wait_until(lambda: (sample(fleet, "trailerlink_monitor_trailer_heartbeat_age_seconds",
                               trailer_id=silent) or 0) > 0.5, 10, "silent trailer's age grows")
    # The live trailer keeps heartbeating, so its age keeps coming back down.
    wait_until(lambda: (sample(fleet, "trailerlink_monitor_trailer_heartbeat_age_seconds",
                               trailer_id=trailer) or 99) < 5, 30, "a fresh heartbeat")


def test_relay_refuses_a_trailer_outside_the_fleet(start_monitor, tmp_path: Path) -> None:
    from trailerlink_events.messages import Heartbeat, new_meta

    fleet_file = tmp_path / "trailers.yaml"
    fleet_file.write_text('trailers:\n  - "trailer-known"\n')
    _, fleet = start_monitor("fleet", TRAILERLINK_FLEET_FILE=str(fleet_file))
    hb = Heartbeat(meta=new_meta("monitor", "trailer-stranger"), sequence=1)
    rsp = httpx.post(f"{fleet}/v1/events", content=hb.SerializeToString(),
                     headers={"X-Trailerlink-Topic": "trailerlink.trailer.heartbeat.v1"})
    assert rsp.status_code == 403
    rsp = httpx.post(f"{fleet}/v1/events", content=b"x",
                     headers={"X-Trailerlink-Topic": "trailerlink.trailer.object-sealed.v1"})
    assert rsp.status_code == 400
