"""The data centre scaled out as deployed: three ingest replicas behind a real load
balancer (HAProxy, TCP, each replica terminating the trailer's mutual TLS), sharing one
uploads directory and a PostgreSQL ledger, on a three-node Kafka. The replica receiving
a study is killed (kill -9) mid-upload: the trailer's uplink resumes on another replica
through the balancer, the dead replica's upload lock does not hold the object, and every
image the modality saw acknowledged is in PACS once, byte-identical and committed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from trailerlink_testing.stack import Service
from trailerlink_testing.waiting import wait_until

from .conftest import System, _system

WOMEN = 4
# Slow enough that a study's uploads are still arriving when the test looks for them.
DRIP_BYTES_PER_SECOND = 30_000


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
