"""The data centre on its deployed Kafka shape (three nodes, RF 3, min ISR 2) while a
broker dies: the ingest keeps consuming completed uploads and publishing deliveries
through the failover, and every image the modality saw acknowledged is in PACS once,
byte-identical and committed. (The broker-level guarantee itself — nothing acknowledged
lost when a leader dies — is tested in libs/events.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from trailerlink_events import topics
from trailerlink_testing.kafka import KafkaCluster

from .conftest import System, _system

WOMEN = 4


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from _system(tmp_path_factory.mktemp("e2e-replicated"), WOMEN, kafka_nodes=3)


def test_a_central_broker_killed_mid_study_loses_and_duplicates_nothing(
    replicated: System,
) -> None:
    cluster = replicated.central.broker
    assert isinstance(cluster, KafkaCluster)
    [first] = replicated.next_women(1)
    before = replicated.screen(first, seed=51)
    replicated.wait_confirmed([before])  # the ingest works on the cluster at all

    [second] = replicated.next_women(1)
    in_flight = replicated.screen(second, seed=52)  # acknowledged; on its way up
    victim = cluster.busiest_leader(topics.CENTRAL_UPLOAD_COMPLETED)
    victim.kill()  # kill -9: no flush, no leadership handed over
    [third] = replicated.next_women(1)
    during = replicated.screen(third, seed=53)  # screened while the broker is dead

    replicated.wait_confirmed([in_flight, during], timeout=300)
    victim.start(wait=False)
    cluster.wait_brokers(len(cluster.brokers))

    acknowledged = dict(replicated.modality.acknowledged)
    assert len(acknowledged) == 12
    replicated.assert_each_exactly_once_byte_identical(acknowledged)
    assert len(replicated.central.pacs.instances()) == len(acknowledged)
    assert replicated.dead_letters() == (0, 0)
