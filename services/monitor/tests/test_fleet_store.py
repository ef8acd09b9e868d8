"""The fleet state without Kafka: replays and out-of-order events change nothing twice."""

from __future__ import annotations

from pathlib import Path

from trailerlink_monitor.fleet import FleetStore, JourneyStep


def test_heartbeat_replays_and_older_ones_do_not_move_a_trailer_back(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "f.sqlite")
    assert store.record_heartbeat("t1", 1, 100.0, b"a").newest
    gap = store.record_heartbeat("t1", 4, 130.0, b"d")
    assert gap.newest and gap.missed == 2
    assert not store.record_heartbeat("t1", 4, 130.0, b"d").newest  # replay
    assert not store.record_heartbeat("t1", 3, 120.0, b"c").newest  # late arrival
    # The agent restarted from sequence 1 later on: newest, and no false gap.
    restarted = store.record_heartbeat("t1", 1, 200.0, b"e")
    assert restarted.newest and restarted.missed == 0
    assert store.heartbeats()["t1"] == (200.0, b"e")


def test_completeness_counts_missing_only_past_the_deadline(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "f.sqlite")
    assert store.expect("t1", "s", "m", ["a", "b", "c"], listed_at=0.0,
                        deadline_seconds=100) == 3
    assert store.expect("t1", "s", "m", ["a", "b", "c"], 0.0, 100) == 0  # replayed MPPS
    assert store.mark_delivered("t1", "a", 10.0)
    assert not store.mark_delivered("t1", "a", 11.0)
    counts = store.completeness(now=50)
    assert counts.pending == {"t1": 2} and counts.missing == {}
    counts = store.completeness(now=150)
    assert counts.missing == {"t1": 2}
    assert [m.sop_instance_uid for m in store.missing(150)] == ["b", "c"]
    store.mark_delivered("t1", "b", 160.0)
    assert [m.sop_instance_uid for m in store.missing(170, "t1")] == ["c"]


def test_a_journey_step_is_recorded_once_per_event(tmp_path: Path) -> None:
    store = FleetStore(tmp_path / "f.sqlite")
    step = JourneyStep("in_pacs", "ingest", 5.0, "t1", "sop", "study", "")
    store.add_step("e1", step)
    store.add_step("e1", step)
    store.add_step("e0", JourneyStep("received", "gateway", 1.0, "t1", "sop", "study", ""))
    assert [s.stage for s in store.journey(sop_uid="sop")] == ["received", "in_pacs"]
    assert len(store.journey(study_uid="study")) == 2
    store.purge(older_than=3.0)
    assert [s.stage for s in store.journey(sop_uid="sop")] == ["in_pacs"]
