"""Fixtures for the uplink's tests: tusd, synthetic sealed objects (opaque random bytes,
as the uplink sees them), a queue, and a sender wired like the service wires it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trailerlink_testing.tusd import Tusd, tusd_binary
from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import PRIORITY_ROUTINE, NewObject, SendQueue
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.tus import TusClient, make_http_client

UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # synthetic UIDs only


def synthetic_uid() -> str:
    return f"{UID_ROOT}.{uuid.uuid4().int % 10**20}"


@dataclass
class Outgoing:
    root: Path

    def sealed(
        self,
        size: int,
        study_uid: str | None = None,
        priority: int = PRIORITY_ROUTINE,
        received_at: float = 1_700_000_000.0,
    ) -> NewObject:
        """Write a sealed object (random bytes) under the outgoing root; its queue row."""
        sop = synthetic_uid()
        receipt = uuid.uuid4().hex[:16]
        rel = f"objects/20261128/{sop}.{receipt}.tlsealed"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        return NewObject(
            sealed_path=rel,
            sop_instance_uid=sop,
            study_instance_uid=study_uid or synthetic_uid(),
            series_instance_uid=synthetic_uid(),
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            file_sha256=hashlib.sha256(b"file" + data).hexdigest(),
            dataset_sha256=hashlib.sha256(b"dataset" + data).hexdigest(),
            sealed_sha256=hashlib.sha256(data).hexdigest(),
            sealed_size=size,
            key_id="dc-0123456789abcdef",
            codec="jpegls+zstd",
            priority=priority,
            received_at=received_at,
            sealed_at=received_at + 1,
        )

    def read(self, obj: NewObject) -> bytes:
        return (self.root / obj.sealed_path).read_bytes()


@pytest.fixture
def outgoing(tmp_path: Path) -> Outgoing:
    root = tmp_path / "outgoing"
    root.mkdir()
    return Outgoing(root)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SendQueue]:
    q = SendQueue(tmp_path / "uplink" / "queue.sqlite")
    yield q
    q.close()


@pytest.fixture
def tusd(tmp_path: Path) -> Iterator[Tusd]:
    if tusd_binary() is None:
        pytest.skip("tusd not installed (scripts/install-tools.sh)")
    with Tusd(tmp_path / "tusd") as server:
        yield server


@dataclass
class Rig:
    sender: Sender
    tus: TusClient
    link: LinkMonitor
    bucket: TokenBucket


@pytest.fixture
async def make_rig() -> AsyncIterator[object]:
    clients = []

    def build(
        queue: SendQueue,
        outgoing: Outgoing,
        url: str,
        *,
        chunk: int = 64 * 1024,
        concurrency: int = 1,
        rate: int = 0,
        io_timeout: float = 5.0,
        backoff_max: float = 1.0,
    ) -> Rig:
        http = make_http_client(
            verify=False,
            connect_timeout=2.0,
            io_timeout=io_timeout,
            max_connections=2 * concurrency + 2,
        )
        clients.append(http)
        bucket = TokenBucket(CapSchedule(rate, []))
        tus = TusClient(url, http, bucket)

        async def probe() -> None:
            await tus.discover()

        link = LinkMonitor(probe, probe_interval=0.3)
        sender = Sender(
            queue,
            tus,
            link,
            outgoing.root,
            trailer_id="trailer-test",
            chunk_size=chunk,
            concurrency=concurrency,
            backoff_initial=0.1,
            backoff_max=backoff_max,
        )
        return Rig(sender, tus, link, bucket)

    yield build
    for http in clients:
        await http.aclose()


@pytest.fixture
async def running() -> AsyncIterator[object]:
    """Start rig tasks (sender + probe) that stop at the end of the test."""
    stops: list[tuple[asyncio.Event, list[asyncio.Task[None]]]] = []

    def start(rig: Rig) -> asyncio.Event:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(rig.sender.run(stop)),
            asyncio.create_task(rig.link.run_probe(stop)),
        ]
        stops.append((stop, tasks))
        return stop

    yield start
    for stop, tasks in stops:
        stop.set()
        await asyncio.wait(tasks, timeout=15)
