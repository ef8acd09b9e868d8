"""The fleet state without Kafka, on SQLite and on a real PostgreSQL (the same tests for
both): replays and out-of-order events change nothing twice, state survives reopening,
two replicas on one database agree, and a database that does not answer is said so."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
from trailerlink_monitor.fleet.store import FleetStateUnavailable, FleetStore, JourneyStep
from trailerlink_testing.ports import free_port

from .conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path):
    """Opens stores on one database (each call: another connection, like a replica)."""
    dsn = "" if request.param == "sqlite" else fresh_database(request.getfixturevalue("postgres"))
    stores: list[FleetStore] = []

    def make() -> FleetStore:
        stores.append(FleetStore(dsn=dsn) if dsn else FleetStore(tmp_path / "f.sqlite"))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def test_heartbeat_replays_and_older_ones_do_not_move_a_trailer_back(open_store) -> None:
    store = open_store()
    assert store.record_heartbeat("t1", 1, 100.0, b"a").newest
    gap = store.record_heartbeat("t1", 4, 130.0, b"d")
    assert gap.newest and gap.missed == 2
    assert not store.record_heartbeat("t1", 4, 130.0, b"d").newest  # replay
    assert not store.record_heartbeat("t1", 3, 120.0, b"c").newest  # late arrival
    # The agent restarted from sequence 1 later on: newest, and no false gap.
    restarted = store.record_heartbeat("t1", 1, 200.0, b"e")
    assert restarted.newest and restarted.missed == 0
    assert store.heartbeats()["t1"] == (200.0, b"e")


def test_completeness_counts_missing_only_past_the_deadline(open_store) -> None:
    store = open_store()
    assert store.expect("t1", "s", "m", ["a", "b", "c"], listed_at=0.0, deadline_seconds=100) == 3
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


def test_a_journey_step_is_recorded_once_per_event(open_store) -> None:
    store = open_store()
    step = JourneyStep("in_pacs", "ingest", 5.0, "t1", "sop", "study", "")
    store.add_step("e1", step)
    store.add_step("e1", step)
    store.add_step("e0", JourneyStep("received", "gateway", 1.0, "t1", "sop", "study", ""))
    assert [s.stage for s in store.journey(sop_uid="sop")] == ["received", "in_pacs"]
    assert len(store.journey(study_uid="study")) == 2
    store.purge(older_than=3.0)
    assert [s.stage for s in store.journey(sop_uid="sop")] == ["in_pacs"]


def test_state_survives_reopening(open_store) -> None:
    first = open_store()
    first.record_heartbeat("t1", 7, 70.0, b"\x00\xffbinary")
    first.expect("t1", "s", "m", ["x"], 0.0, 1.0)
    first.close()
    again = open_store()  # tables exist: creating them again is harmless
    assert again.heartbeats() == {"t1": (70.0, b"\x00\xffbinary")}
    assert [m.sop_instance_uid for m in again.missing(5.0)] == ["x"]
    assert not again.record_heartbeat("t1", 7, 70.0, b"\x00\xffbinary").newest


def test_two_replicas_on_one_database_count_each_image_once(open_store) -> None:
    replicas = [open_store(), open_store()]
    uids = [f"u{i}" for i in range(40)]

    def expect(i: int) -> int:
        return replicas[i % 2].expect("t1", "s", "m", uids, 0.0, 100.0)

    def deliver(i: int) -> bool:
        return replicas[i % 2].mark_delivered("t1", uids[i % 10], 5.0)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(expect, range(8))) == len(uids)  # each new once, in all
        assert sum(pool.map(deliver, range(40))) == 10  # each first delivery once
        heartbeats = list(
            pool.map(
                lambda n: replicas[n % 2].record_heartbeat("t2", n, float(n), b"%d" % n),
                range(1, 41),
            )
        )
    assert replicas[0].completeness(now=50).pending == {"t1": 30}
    # Whatever the order they landed in, the newest is the highest sequence.
    assert replicas[1].heartbeats()["t2"] == (40.0, b"40")
    assert any(h.newest for h in heartbeats)


def test_a_database_that_does_not_answer_is_unavailable_not_a_crash() -> None:
    with pytest.raises(FleetStateUnavailable):
        FleetStore(dsn=f"postgresql://trailerlink@127.0.0.1:{free_port()}/none")
