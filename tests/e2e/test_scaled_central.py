"""The data centre scaled out as deployed: three ingest replicas behind a real load
balancer (HAProxy, TCP, each replica terminating the trailer's mutual TLS), sharing one
uploads directory and a PostgreSQL ledger, on a three-node Kafka. The replica receiving
a study is killed (kill -9) mid-upload: the trailer's uplink resumes on another replica
through the balancer, the dead replica's upload lock does not hold the object, and every
image the modality saw acknowledged is in PACS once, byte-identical and committed. The
ledger's PostgreSQL crashes and comes back mid-study: the replicas wait for it and PACS
still sees each image once. The replica holding a completed study it cannot yet store in
PACS (verified, retrying the C-STORE) is killed -9: another replica takes its partition,
verifies and stores every image, and PACS sees each once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from trailerlink_testing.stack import Service
from trailerlink_testing.waiting import wait_until

from .conftest import System, _system

WOMEN = 4  # the first test screens two, each of the others one
# Slow enough that a study's uploads are still arriving when the test looks for them.
DRIP_BYTES_PER_SECOND = 30_000
STORE_FAILURES = "trailerlink_ingest_pacs_store_failures_total"
STORES = "trailerlink_ingest_pacs_store_seconds_count"  # C-STOREs the PACS answered Success
UPLOADS_COMPLETED = "trailerlink_ingest_uploads_completed_total"


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from _system(
        tmp_path_factory.mktemp("e2e-scaled"), WOMEN, kafka_nodes=3, ingest_replicas=3
    )


def _receiving(replicas: list[Service]) -> Service | None:
    for replica in replicas:
        if replica.metric("trailerlink_ingest_uploads_active") > 0:
            return replica
    return None


def _sum(replicas: list[Service], name: str) -> float:
    return sum(r.metric(name) for r in replicas)


def _ledger_waits(replicas: list[Service]) -> float:
    """Records the replicas retried or requests they refused (the ledger away)."""
    return sum(
        r.metric("trailerlink_kafka_handler_failures_total")
        + r.metric("trailerlink_ingest_requests_refused_total")
        for r in replicas
    )


def test_an_ingest_replica_killed_mid_upload_hands_the_study_to_another(
    scaled: System,
) -> None:
    central, link = scaled.central, scaled.link
    assert link is not None
    replicas = central.ingests
    assert len(replicas) == 3 and central.balancer is not None

    link.drip(DRIP_BYTES_PER_SECOND)
    [item] = scaled.next_women(1)
    study = scaled.screen(item, seed=61)
    holder = wait_until(
        lambda: _receiving(replicas), 120, "a replica receiving the study", interval=0.1
    )
    holder.kill9()
    link.drip(None)
    survivors = [r for r in replicas if r is not holder]

    [later] = scaled.next_women(1)
    after = scaled.screen(later, seed=62)  # screened with one replica dead
    scaled.wait_confirmed([study, after], timeout=300)
    assert sum(r.metric("trailerlink_ingest_uploads_completed_total") for r in survivors) > 0

    holder.restart()
    acknowledged = dict(scaled.modality.acknowledged)
    assert len(acknowledged) == 8
    scaled.assert_each_exactly_once_byte_identical(acknowledged)
    assert len(central.pacs.instances()) == len(acknowledged)
    assert scaled.dead_letters() == (0, 0)


def test_a_ledger_crash_mid_study_delays_but_stores_each_image_once(scaled: System) -> None:
    central = scaled.central
    ledger = central.ledger_db
    assert ledger is not None
    replicas = central.ingests
    waits_before = _ledger_waits(replicas)
    ledger.stop("immediate")  # no checkpoint, no goodbye to clients: a crash
    [item] = scaled.next_women(1)
    study = scaled.screen(item, seed=63)
    wait_until(
        lambda: _ledger_waits(replicas) > waits_before,
        180,
        "the replicas finding the ledger away",
        interval=0.25,
    )
    assert not study.committed
    ledger.start()
    scaled.wait_confirmed([study], timeout=300)

    acknowledged = dict(scaled.modality.acknowledged)
    assert len(acknowledged) == 12
    scaled.assert_each_exactly_once_byte_identical(acknowledged)
    assert len(central.pacs.instances()) == len(acknowledged)
    assert scaled.dead_letters() == (0, 0)


def test_an_ingest_replica_killed_while_storing_to_pacs_hands_the_objects_on(
    scaled: System,
) -> None:
    central = scaled.central
    replicas = central.ingests
    assert all(r.proc.running() for r in replicas)
    failures_before = {r.name: r.metric(STORE_FAILURES) for r in replicas}
    uploads_before = _sum(replicas, UPLOADS_COMPLETED)

    def holders() -> list[Service]:
        return [r for r in replicas if r.metric(STORE_FAILURES) > failures_before[r.name]]

    # With the PACS away, the replica owning the study's partition verifies each object
    # and keeps retrying its C-STORE: it holds the study, and no one else may have it.
    central.pacs.stop()
    try:
        [item] = scaled.next_women(1)
        study = scaled.screen(item, seed=64)
        wait_until(
            lambda: (
                holders() and _sum(replicas, UPLOADS_COMPLETED) >= uploads_before + len(study.sent)
            ),
            120,
            "every upload complete and a replica retrying the PACS",
            interval=0.25,
        )
        [holder] = holders()
        assert not study.committed
        survivors = [r for r in replicas if r is not holder]
        stores_before = _sum(survivors, STORES)
        holder.kill9()
    finally:
        central.pacs.start()  # same ports and storage: what it held is still there
    # Well inside pytest's 300 s: a stuck object fails here, by name, not by the timeout.
    scaled.wait_confirmed([study], timeout=120)
    assert _sum(survivors, STORES) - stores_before == len(study.sent)  # no C-STORE twice

    holder.restart()
    acknowledged = dict(scaled.modality.acknowledged)
    assert acknowledged == {sop: sha for s in scaled.screened for sop, sha in s.sent.items()}
    scaled.assert_each_exactly_once_byte_identical(acknowledged)
    assert len(central.pacs.instances()) == len(acknowledged)
    assert scaled.dead_letters() == (0, 0)
