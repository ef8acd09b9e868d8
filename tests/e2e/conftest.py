"""The whole system for the end-to-end tests: both sites from ``trailerlink_testing.stack``
(the same starter `make demo` uses), with a fault proxy on the WAN path so a test can cut
the link, and the simulated modality."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from trailerlink_events import topics
from trailerlink_events.topics import CENTRAL_DEAD_LETTER, TRAILER_DEAD_LETTER
from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.jaeger import Jaeger, JaegerUnavailable, jaeger_binary
from trailerlink_testing.stack import (
    Booking,
    CentralStack,
    SimulatedModality,
    StudyResult,
    TrailerStack,
    synthetic_day,
)
from trailerlink_testing.trailerhost import TrailerHost
from trailerlink_testing.waiting import wait_until

WOMEN = 10


@dataclass
class System:
    central: CentralStack
    trailer: TrailerStack
    modality: SimulatedModality
    link: FaultProxy | None  # the fault proxy on the WAN path (None: a TrailerHost's WAN)
    bookings: list[Booking]
    screened: list[StudyResult]
    host: TrailerHost | None = None  # the uplink's namespace, when it has one

    def next_women(self, count: int) -> list:
        """Worklist entries of women not screened yet (in booking order)."""
        done = {s.accession_number for s in self.screened}
        items = [i for i in self.modality.query_worklist() if str(i.AccessionNumber) not in done]
        assert len(items) >= count, "the synthetic day has run out of women"
        return items[:count]

    def screen(self, item, seed: int = 0) -> StudyResult:
        study = self.modality.screen(item, seed=seed)
        self.screened.append(study)
        return study

    def wait_confirmed(self, studies: list[StudyResult], timeout: float = 180) -> None:
        wait_until(
            lambda: all(s.confirmed for s in studies),
            timeout,
            "storage commitment confirmed for every study",
            interval=0.25,
        )

    def assert_in_pacs_byte_identical(self, studies: list[StudyResult]) -> None:
        for study in studies:
            for sop, sha in study.sent.items():
                assert self.central.pacs_dataset_sha256(sop) == sha, sop

    def assert_each_exactly_once_byte_identical(self, expected: dict[str, str]) -> None:
        """Each SOP UID of ``expected`` is one instance in Orthanc and its dataset has the
        SHA-256 the modality sent."""
        instances = self.central.pacs.get("/instances?expand")
        times = Counter(str(i["MainDicomTags"].get("SOPInstanceUID")) for i in instances)
        for sop, sha in expected.items():
            assert times[sop] == 1, f"{sop} is in PACS {times[sop]} times"
            assert self.central.pacs_dataset_sha256(sop) == sha, sop

    def dead_letters(self) -> tuple[int, int]:
        """How many records the trailer's and the data centre's dead-letter topics hold
        (each site has a broker of its own, so nothing else writes there)."""
        return (
            _records_in(self.trailer.broker.bootstrap, TRAILER_DEAD_LETTER),
            _records_in(self.central.broker.bootstrap, CENTRAL_DEAD_LETTER),
        )


def _records_in(bootstrap: str, topic: str) -> int:
    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(topics.topic(topic).partitions)]
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            return sum(ends[p] - starts[p] for p in parts)
        finally:
            await consumer.stop()

    return asyncio.run(count())


def _system(
    directory: Path,
    women: int,
    site_env: dict[str, str] | None = None,
    trailer_site_env: dict[str, str] | None = None,
    kafka_nodes: int = 1,
    ingest_replicas: int = 1,
    balancer: str = "tcp",
    **trailer_kwargs: object,
) -> Iterator[System]:
    """``site_env``: environment of every service on both sites (e.g. a trace exporter;
    by default none exports); ``trailer_site_env``: the trailer's instead, if given;
    ``kafka_nodes``: 3 runs the data centre on a replicated Kafka cluster;
    ``ingest_replicas``: more than one puts them behind HAProxy on a PostgreSQL ledger,
    ``balancer`` (``tcp`` or ``http``) says whether it passes TLS through or terminates it."""
    bookings = synthetic_day(women, seed=7)
    central = CentralStack(
        directory / "central",
        kafka_nodes=kafka_nodes,
        ingest_replicas=ingest_replicas,
        balancer=balancer,  # type: ignore[arg-type]
    )
    central.site_env.update(site_env or {})
    with FaultProxy(("127.0.0.1", central.tus_port)) as link:
        trailer = TrailerStack(
            directory / "trailer",
            central,
            bookings,
            ingest_url=f"https://127.0.0.1:{link.port}",
            **trailer_kwargs,
        )  # type: ignore[arg-type]
        trailer.site_env.update(site_env or {} if trailer_site_env is None else trailer_site_env)
        # The trailer's broker boots while the data centre starts (the two sites are
        # independent until the trailer's services start).
        with (
            trailer.booting(),
            central,
            trailer,
            SimulatedModality(trailer, directory / "modality", rows=256, columns=208) as modality,
        ):
            modality.wait_for_worklist(women)
            yield System(central, trailer, modality, link, bookings, [])


def system_on_4g(
    directory: Path,
    women: int,
    rate_bits: int,
    *,
    rows: int,
    columns: int,
    uplink_env: dict[str, str] | None = None,
    ingest_env: dict[str, str] | None = None,
) -> Iterator[System]:
    """Both sites with the uplink on a trailer host of its own (a network namespace)
    whose WAN to the ingest is a tc-shaped veth that a test takes down: a 4G link lost
    without FIN or RST (:class:`~trailerlink_testing.trailerhost.TrailerHost`)."""
    bookings = synthetic_day(women, seed=23)
    with TrailerHost(rate_bits=rate_bits) as host:
        central = CentralStack(
            directory / "central", tus_host=host.wan_server_ip, ingest_env=ingest_env
        )
        trailer = TrailerStack(
            directory / "trailer", central, bookings, uplink_host=host, uplink_env=uplink_env
        )
        with (
            trailer.booting(),
            central,
            trailer,
            SimulatedModality(
                trailer, directory / "modality", rows=rows, columns=columns
            ) as modality,
        ):
            modality.wait_for_worklist(women)
            yield System(central, trailer, modality, None, bookings, [], host)


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """A real trace backend for the module's system to export to (built from the Go
    module proxy the first time; the module skips, saying why, where it cannot be)."""
    try:
        jaeger_binary()
    except JaegerUnavailable as exc:
        pytest.skip(f"Jaeger cannot be built on this machine: {exc}")
    with Jaeger(tmp_path_factory.mktemp("jaeger")) as running:
        yield running


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Both sites, started once per module (about a minute: two brokers, Orthanc, six
    services); tests run in file order and leave the system running."""
    yield from _system(tmp_path_factory.mktemp("e2e"), WOMEN)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the dashboards were drawn (test_dashboards.py), for a person to look at."""
    from trailerlink_testing.panels import DRAWN

    if DRAWN:
        terminalreporter.section("dashboards drawn from Prometheus's answers")
        for path in DRAWN:
            terminalreporter.write_line(str(path))
