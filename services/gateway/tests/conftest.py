"""Fixtures for the gateway's tests against real peers: the gateway as a subprocess,
dcmtk as the modality, the session's Kafka broker."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom.data
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from trailerlink_crypto.atrest import SpoolKey, SpoolKeyring
from trailerlink_events.kafka import PermanentError, decode_event
from trailerlink_spool.index import SpoolIndex
from trailerlink_spool.layout import SpoolLayout
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get

PYDICOM_TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"
AE_TITLE = "TRAILERLINK"
MODALITY_AE = "MG1"


@dataclass
class Gateway:
    """A running gateway subprocess and what a test needs to look at it."""

    proc: ServiceProcess
    dicom_port: int
    http_port: int
    data_dir: Path
    key: SpoolKey
    env: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> SpoolLayout:
        return SpoolLayout(self.data_dir / "spool")

    @property
    def keyring(self) -> SpoolKeyring:
        return SpoolKeyring(self.key)

    def index(self) -> SpoolIndex:
        return SpoolIndex(self.layout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.proc.wait_ready(self.url("/readyz"), timeout)

    def restart(self) -> None:
        self.proc.start()
        self.wait_ready()

    def kill9(self) -> None:
        self.proc.kill9()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in http_get(self.url("/metrics")).splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            have = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
            if metric == name and have == want:
                return float(value)
        return 0.0


@pytest.fixture
def gateway_factory(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[Callable[..., Gateway]]:
    """Start gateways (subprocesses); every one is killed at the end of the test."""
    started: list[Gateway] = []

    def start(
        peers: str = "MG1,ECHOSCU,STORESCU,STORE1,STORE2",
        *,
        data_dir: Path | None = None,
        wait: bool = True,
        **settings: object,
    ) -> Gateway:
        base = tmp_path_factory.mktemp("gateway")
        data_dir = data_dir or base / "data"
        key = SpoolKey.generate()
        key.write_file(base / "spool.key")
        dicom_port, http_port = free_port(), free_port()
        env = {
            "TRAILERLINK_DATA_DIR": str(data_dir),
            "TRAILERLINK_SPOOL_KEY_FILE": str(base / "spool.key"),
            "TRAILERLINK_DICOM_PORT": str(dicom_port),
            "TRAILERLINK_DICOM_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(http_port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_DICOM_ALLOWED_PEERS": peers,
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_TRAILER_ID": f"trailer-{uuid.uuid4().hex[:8]}",
            "TRAILERLINK_SPOOL_MIN_FREE_BYTES": str(64 * 1024 * 1024),
            "TRAILERLINK_LOG_LEVEL": "INFO",
            **{f"TRAILERLINK_{k.upper()}": str(v) for k, v in settings.items()},
        }
        proc = ServiceProcess(
            [console_script("trailerlink-gateway")], env=env, log_path=base / "gateway.log"
        )
        gateway = Gateway(proc, dicom_port, http_port, data_dir, key, env)
        started.append(gateway)
        proc.start()
        if wait:
            gateway.wait_ready()
        return gateway

    yield start
    for gateway in started:
        gateway.kill9()


@dataclass
class StoreRun:
    """What one storescu run reported, file by file."""

    returncode: int
    succeeded: list[Path]
    failed: list[Path]
    output: str


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response( \(([^)]*)\))?")


def storescu(
    port: int,
    files: Sequence[Path],
    *,
    calling: str = MODALITY_AE,
    called: str = AE_TITLE,
    options: Sequence[str] = (),
    timeout: float = 300,
) -> StoreRun:
    """Send ``files`` with dcmtk storescu; parse which ones the gateway acknowledged."""
    argv = [
        "storescu",
        "-v",
        "-nh",
        "-R",
        "-aet",
        calling,
        "-aec",
        called,
        *options,
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    return _parse_storescu(done.returncode, output)


def _parse_storescu(returncode: int, output: str) -> StoreRun:
    succeeded: list[Path] = []
    failed: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            if current is not None:
                failed.append(current)
            current = Path(sending.group(1).strip())
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            (succeeded if response.group(2) == "Success" else failed).append(current)
            current = None
    if current is not None:
        failed.append(current)
    return StoreRun(returncode, succeeded, failed, output)


def storescu_popen(
    port: int, files: Sequence[Path], *, calling: str = MODALITY_AE, options: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """storescu in the background (for tests that kill one side mid-transfer)."""
    argv = [
        "storescu",
        "-v",
        "-nh",
        "-R",
        "-aet",
        calling,
        "-aec",
        AE_TITLE,
        *options,
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_storescu(proc: subprocess.Popen[str], timeout: float = 300) -> StoreRun:
    output, _ = proc.communicate(timeout=timeout)
    return _parse_storescu(proc.returncode, output)


def echoscu(
    port: int, *, calling: str = "ECHOSCU", called: str = AE_TITLE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _read_topic_to_end(bootstrap: str, topic: str) -> list:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    events = []
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    headers = dict(r.headers or ())
                    try:
                        events.append(decode_event(r.topic, r.value, headers))
                    except PermanentError:
                        # The session's topics are shared and other tests put poison
                        # records on them on purpose: not the gateway's events.
                        continue
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return events


def read_topic(bootstrap: str, topic: str) -> list:
    """Every event on ``topic`` right now (from the beginning to the current end)."""
    return asyncio.run(_read_topic_to_end(bootstrap, topic))


class Modality:
    """dcmtk as the modality (tests get it through the ``modality`` fixture)."""

    storescu = staticmethod(storescu)
    storescu_popen = staticmethod(storescu_popen)
    finish_storescu = staticmethod(finish_storescu)
    echoscu = staticmethod(echoscu)


@pytest.fixture
def modality() -> Modality:
    return Modality()


@pytest.fixture
def topic_events(kafka_bootstrap: str) -> Callable[[str], list]:
    """``topic_events(topic)``: every event on the topic now, start to end."""
    return lambda topic: read_topic(kafka_bootstrap, topic)
