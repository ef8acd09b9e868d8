"""Agent mode through the real broker: heartbeats queue on the trailer while the data
centre is unreachable and all arrive, in order, once it answers — even behind events
stamped with another trailer's id, which are dead-lettered on the trailer, not retried;
a trailer that never reports is seen as silent."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from trailerlink_events import topics
from trailerlink_events.messages import ObjectIdentity, ObjectReceived, new_meta
from trailerlink_monitor.agent.heartbeat import certificate_not_after
from trailerlink_testing.ports import free_port
from trailerlink_testing.scrape import publish_events, sample
from trailerlink_testing.waiting import wait_until

from .conftest import make_certificate

# Enough misconfigured events that retrying each (5 tries, backoff to 0.5 s) would hold
# the heartbeats behind them past the test's deadline.
FOREIGN_RECEIPTS = 120


def test_heartbeats_queued_offline_arrive_after_reconnection(
    start_monitor, topics_created: str, tmp_path: Path
) -> None:
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    silent = f"trailer-{uuid.uuid4().hex[:6]}"
    fleet_file = tmp_path / "trailers.yaml"
    fleet_file.write_text(f'trailers:\n  - "{trailer}"\n  - "{silent}"\n')
    fleet_port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    cert, _ = make_certificate(tmp_path, trailer, days=20)
    # A gateway on this trailer's broker misconfigured with another trailer's id.
    foreign = f"trailer-{uuid.uuid4().hex[:6]}"
    publish_events(
        topics_created,
        [
            (
                topics.OBJECT_RECEIVED,
                f"1.2.826.0.1.3680043.10.1.{n}",
                ObjectReceived(
                    meta=new_meta("gateway", foreign),
                    object=ObjectIdentity(
                        study_instance_uid="1.2.826.0.1.3680043.10.1",
                        sop_instance_uid=f"1.2.826.0.1.3680043.10.1.{n}",
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                    ),
                ),
            )
            for n in range(FOREIGN_RECEIPTS)
        ],
    )

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
    wait_until(
        lambda: (
            (sample(agent, "trailerlink_monitor_agent_heartbeats_total") or 0) >= 5
            and (sample(agent, "trailerlink_monitor_relay_failures_total") or 0) >= 2
        ),
        30,
        "heartbeats queued while the data centre is unreachable",
    )

    _, fleet = start_monitor(
        "fleet", TRAILERLINK_HTTP_PORT=str(fleet_port), TRAILERLINK_FLEET_FILE=str(fleet_file)
    )
    queued = sample(agent, "trailerlink_monitor_agent_heartbeats_total") or 0
    wait_until(
        lambda: (
            (sample(fleet, "trailerlink_monitor_heartbeats_total", trailer_id=trailer) or 0)
            >= queued
        ),
        60,
        "every queued heartbeat delivered",
    )
    # The other trailer's receipts went to the trailer's dead-letter topic, none to the
    # data centre.
    wait_until(
        lambda: (
            (
                sample(agent, "trailerlink_kafka_dead_letters_total", topic=topics.OBJECT_RECEIVED)
                or 0
            )
            >= FOREIGN_RECEIPTS
        ),
        30,
        "the other trailer's receipts dead-lettered",
    )
    assert sample(
        agent, "trailerlink_monitor_relay_events_total", topic=topics.OBJECT_RECEIVED
    ) in (None, 0.0)
    # Sequence 1..n arrived without a gap: none was lost while offline.
    assert sample(fleet, "trailerlink_monitor_heartbeats_missed_total", trailer_id=trailer) in (
        None,
        0.0,
    )
    free = sample(fleet, "trailerlink_monitor_trailer_disk_free_bytes", trailer_id=trailer)
    assert free is not None and free > 0
    # The client certificate's notAfter came with the heartbeats.
    not_after = certificate_not_after(cert)
    assert not_after is not None
    assert (
        sample(
            fleet,
            "trailerlink_monitor_trailer_certificate_expiry_timestamp_seconds",
            trailer_id=trailer,
        )
        == not_after
    )
    body = httpx.get(f"{fleet}/v1/trailers").json()["trailers"]
    by_id = {t["trailer_id"]: t for t in body}
    assert by_id[trailer]["versions"]["monitor"] == "0.1.0"
    assert "last_heartbeat_at" not in by_id[silent]

    # The silent trailer: expected, never heard from, its silence counted.
    assert sample(fleet, "trailerlink_monitor_trailer_expected", trailer_id=silent) == 1
    wait_until(
        lambda: (
            (
                sample(
                    fleet, "trailerlink_monitor_trailer_heartbeat_age_seconds", trailer_id=silent
                )
                or 0
            )
            > 0.5
        ),
        10,
        "silent trailer's age grows",
    )
    # The live trailer keeps heartbeating, so its age keeps coming back down.
    wait_until(
        lambda: (
            (
                sample(
                    fleet, "trailerlink_monitor_trailer_heartbeat_age_seconds", trailer_id=trailer
                )
                or 99
            )
            < 5
        ),
        30,
        "a fresh heartbeat",
    )


def test_relay_refuses_a_trailer_outside_the_fleet(start_monitor, tmp_path: Path) -> None:
    from trailerlink_events.messages import Heartbeat, new_meta

    fleet_file = tmp_path / "trailers.yaml"
    fleet_file.write_text('trailers:\n  - "trailer-known"\n')
    _, fleet = start_monitor("fleet", TRAILERLINK_FLEET_FILE=str(fleet_file))
    hb = Heartbeat(meta=new_meta("monitor", "trailer-stranger"), sequence=1)
    rsp = httpx.post(
        f"{fleet}/v1/events",
        content=hb.SerializeToString(),
        headers={"X-Trailerlink-Topic": "trailerlink.trailer.heartbeat.v1"},
    )
    assert rsp.status_code == 403
    rsp = httpx.post(
        f"{fleet}/v1/events",
        content=b"x",
        headers={"X-Trailerlink-Topic": "trailerlink.trailer.object-sealed.v1"},
    )
    assert rsp.status_code == 400
