"""`trailerlinkctl status` names an operator's hold: a paused trailer's link reads "up"
and its canary fails, so without this support would chase the link (or the PACS) for a
pause someone asked for."""

from __future__ import annotations

import uuid

import pytest
from trailerlink_events import topics
from trailerlink_events.messages import Heartbeat, LinkState, new_meta
from trailerlink_testing.scrape import publish_events
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka


def test_status_says_paused_and_capped_not_ok_or_canary_failing(ctl, kafka_bootstrap):
    paused, capped = (f"trailer-{uuid.uuid4().hex[:6]}" for _ in range(2))
    publish_events(
        kafka_bootstrap,
        [
            (
                topics.CENTRAL_HEARTBEAT,
                paused,
                Heartbeat(
                    meta=new_meta("monitor", paused),
                    sequence=1,
                    link_state=LinkState.LINK_STATE_UP,
                    canary_ok=False,
                    uplink_paused=True,
                    uplink_operator_cap_bytes_per_second=0,
                ),
            ),
            (
                topics.CENTRAL_HEARTBEAT,
                capped,
                Heartbeat(
                    meta=new_meta("monitor", capped),
                    sequence=1,
                    link_state=LinkState.LINK_STATE_UP,
                    canary_ok=True,
                    uplink_operator_cap_bytes_per_second=250_000,
                    uplink_cap_bytes_per_second=250_000,
                ),
            ),
        ],
    )

    def seen(trailer: str) -> dict | None:
        result = ctl("status", trailer, "--json")
        return result.json()["trailers"][0] if result.code == 0 else None

    entry = wait_until(lambda: seen(paused), 30, "paused trailer in status", interval=0.3)
    assert entry["uplink_paused"] is True and entry["link_state"] == "up"
    human = ctl("status", paused)
    assert human.code == 0 and "UPLINK" in human.out
    assert "paused" in human.out and "canary failing" not in human.out

    entry = wait_until(lambda: seen(capped), 30, "capped trailer in status", interval=0.3)
    assert entry["uplink_paused"] is False
    assert entry["uplink_operator_cap_bytes_per_second"] == 250_000
    human = ctl("status", capped)
    assert human.code == 0 and "capped 250.0 kB/s" in human.out
