"""`trailerlinkctl status` and `trace` over a running fleet monitor fed through the real
broker; unknown trailers and UIDs, malformed UIDs and a dead monitor are clear failures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from trailerlink_events import topics
from trailerlink_events.messages import (
    Heartbeat,
    LinkState,
    ObjectDelivered,
    ObjectIdentity,
    UploadCompleted,
    new_meta,
    timestamp,
)
from trailerlink_testing.scrape import publish_events
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka
MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def test_status_shows_a_trailers_heartbeat_and_unknown_trailer_fails(ctl, kafka_bootstrap):
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    hb = Heartbeat(
        meta=new_meta("monitor", trailer),
        sequence=7,
        backlog_objects=12,
        backlog_bytes=345_000_000,
        oldest_unsent_age_seconds=1800.0,
        disk_free_bytes=50_000_000_000,
        disk_total_bytes=200_000_000_000,
        link_state=LinkState.LINK_STATE_DOWN,
        link_goodput_bytes_per_second=0.0,
        canary_ok=True,
        versions={"uplink": "0.1.0", "gateway": "0.1.0"},
    )
    publish_events(kafka_bootstrap, [(topics.CENTRAL_HEARTBEAT, trailer, hb)])

    def seen() -> dict | None:
        result = ctl("status", trailer, "--json")
        return result.json()["trailers"][0] if result.code == 0 else None

    entry = wait_until(seen, 30, "trailer in status", interval=0.3)
    assert entry["trailer_id"] == trailer and entry["sequence"] == 7
    assert entry["backlog_objects"] == 12 and entry["backlog_bytes"] == 345_000_000
    assert entry["oldest_unsent_age_seconds"] == 1800.0
    assert entry["link_state"] == "down" and entry["canary_ok"] is True
    assert entry["versions"] == {"uplink": "0.1.0", "gateway": "0.1.0"}
    assert entry["heartbeat_age_seconds"] < 60

    human = ctl("status", trailer)
    assert human.code == 0
    assert trailer in human.out and "link down" in human.out and "345.0 MB" in human.out
    fleet = ctl("status", "--json")
    assert trailer in {t["trailer_id"] for t in fleet.json()["trailers"]}

    unknown = ctl("status", "trailer-nobody", "--json")
    assert unknown.code == 3 and "unknown trailer" in unknown.json()["error"]
    down = ctl("status", TRAILERLINKCTL_MONITOR_URL="http://127.0.0.1:9")
    assert down.code == 5 and "unreachable" in down.err


def test_status_shows_failed_objects_and_dead_letters_on_a_trailer(ctl, kafka_bootstrap):
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    hb = Heartbeat(
        meta=new_meta("monitor", trailer),
        sequence=1,
        link_state=LinkState.LINK_STATE_UP,
        canary_ok=False,
        failed_objects=4,
        dead_letters=1,
    )
    publish_events(kafka_bootstrap, [(topics.CENTRAL_HEARTBEAT, trailer, hb)])

    def seen() -> dict | None:
        result = ctl("status", trailer, "--json")
        return result.json()["trailers"][0] if result.code == 0 else None

    entry = wait_until(seen, 30, "trailer in status", interval=0.3)
    assert entry["failed_objects"] == 4 and entry["dead_letters"] == 1
    human = ctl("status", trailer)
    assert human.code == 0
    # The failures, not the canary they cause, name the trailer's state.
    assert "failures" in human.out and "canary failing" not in human.out
    assert "FAILED" in human.out and "DEAD LETTERS" in human.out


def test_trace_shows_every_hop_in_time_order(ctl, kafka_bootstrap):
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    study, sop = _uid(), _uid()
    ident = ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG)
    now = datetime.now(UTC)
    publish_events(
        kafka_bootstrap,
        [
            (
                topics.CENTRAL_UPLOAD_COMPLETED,
                f"{trailer}/{study}",
                UploadCompleted(
                    meta=new_meta("ingest", trailer),
                    object=ident,
                    completed_at=timestamp(now - timedelta(minutes=2)),
                ),
            ),
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                f"{trailer}/{study}",
                ObjectDelivered(
                    meta=new_meta("ingest", trailer),
                    object=ident,
                    pacs_ae_title="PACS",
                    received_at=timestamp(now - timedelta(minutes=7)),
                    delivered_at=timestamp(now),
                ),
            ),
        ],
    )

    def traced() -> dict | None:
        result = ctl("trace", sop, "--json")
        doc = result.json() if result.code == 0 else None
        return doc if doc and len(doc["journey"]) >= 3 else None

    doc = wait_until(traced, 30, "journey of the object", interval=0.3)
    assert doc["sop_instance_uid"] == sop
    assert [s["stage"] for s in doc["journey"]] == ["received", "uploaded", "in_pacs"]
    assert [s["at"] for s in doc["journey"]] == sorted(s["at"] for s in doc["journey"])
    assert all(s["trailer_id"] == trailer for s in doc["journey"])

    study_doc = ctl("trace", "--study", study, "--json")
    assert study_doc.code == 0 and study_doc.json()["study_instance_uid"] == study
    assert {s["sop_instance_uid"] for s in study_doc.json()["journey"]} == {sop}
    human = ctl("trace", sop)
    assert "in_pacs" in human.out and "PACS" in human.out

    assert ctl("trace", _uid()).code == 3
    assert ctl("trace", "--study", _uid()).code == 3
    assert ctl("trace", "not-a-uid").code == 2
    assert ctl("trace").code == 2
    assert ctl("trace", sop, "--study", study).code == 2
