"""`trailerlinkctl uplink` against a real uplink process sending to tusd over the real
broker: pause stops bytes leaving (measured at the sender), resume restarts them, a cap
applies on top of the schedule; bad rates, times and credentials change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import ObjectIdentity, ObjectSealed, new_meta, timestamp
from trailerlink_events.topics import OBJECT_SEALED
from trailerlink_testing.kafka_reader import start_group_at_end
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script
from trailerlink_testing.scrape import sample
from trailerlink_testing.tusd import Tusd, tusd_binary
from trailerlink_testing.waiting import wait_until

from .conftest import Ctl

pytestmark = pytest.mark.kafka
SCHEDULED_CAP = 200_000  # bytes/s: a 2 MB object takes ~10 s, time enough to pause it
SIZE = 2_000_000


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


@dataclass
class RunningUplink:
    base: str
    proc: ServiceProcess

    def sent(self) -> float:
        return sample(self.base, "trailerlink_uplink_sent_bytes_total") or 0.0


@pytest.fixture
def uplink(
    tmp_path: Path, kafka_bootstrap: str, unique_group: str, token_file: Path
) -> Iterator[RunningUplink]:
    if tusd_binary() is None:
        pytest.skip("tusd not installed (scripts/install-tools.sh)")
    asyncio.run(start_group_at_end(kafka_bootstrap, unique_group, [OBJECT_SEALED]))
    port = free_port()
    with Tusd(tmp_path / "tusd") as tusd:
        proc = ServiceProcess(
            [console_script("trailerlink-uplink")],
            env={
                "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "TRAILERLINK_HTTP_PORT": str(port),
                "TRAILERLINK_HTTP_HOST": "127.0.0.1",
                "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
                "TRAILERLINK_OUTGOING_DIR": str(tmp_path / "outgoing"),
                "TRAILERLINK_TRAILER_ID": f"trailer-{uuid.uuid4().hex[:6]}",
                "TRAILERLINK_CONSUMER_GROUP": unique_group,
                "TRAILERLINK_INGEST_URL": tusd.url.split("/files/")[0],
                "TRAILERLINK_RECEIPTS_URL": f"http://127.0.0.1:{free_port()}/v1/receipts",
                "TRAILERLINK_PROBE_INTERVAL_SECONDS": "0.3",
                "TRAILERLINK_CHUNK_SIZE_BYTES": str(256 * 1024),
                "TRAILERLINK_BANDWIDTH_CAP_BYTES_PER_SECOND": str(SCHEDULED_CAP),
                "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
            },
            log_path=tmp_path / "uplink.log",
        )
        with proc:
            base = f"http://127.0.0.1:{port}"
            proc.wait_ready(f"{base}/readyz", timeout=90)
            yield RunningUplink(base, proc)


def _seal(outgoing: Path, trailer: str) -> ObjectSealed:
    sop = _uid()
    rel = f"objects/20261128/{sop}.{uuid.uuid4().hex[:16]}.tlsealed"
    data = os.urandom(SIZE)
    (outgoing / rel).parent.mkdir(parents=True, exist_ok=True)
    (outgoing / rel).write_bytes(data)
    return ObjectSealed(
        meta=new_meta("codec", trailer),
        object=ObjectIdentity(
            study_instance_uid=_uid(),
            series_instance_uid=_uid(),
            sop_instance_uid=sop,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        ),
        file_sha256=hashlib.sha256(b"f" + data).hexdigest(),
        dataset_sha256=hashlib.sha256(b"d" + data).hexdigest(),
        sealed_path=rel,
        sealed_size_bytes=SIZE,
        sealed_sha256=hashlib.sha256(data).hexdigest(),
        codec="jpegls+zstd",
        key_id="dc-0123456789abcdef",
        received_at=timestamp(),
        sealed_at=timestamp(),
    )


def _publish(bootstrap: str, event: ObjectSealed) -> None:
    async def run() -> None:
        producer = EventProducer(bootstrap, client_id="test-codec")
        await producer.start()
        try:
            await producer.publish(OBJECT_SEALED, event.object.study_instance_uid, event)
        finally:
            await producer.stop()

    asyncio.run(run())


def _steady(uplink: RunningUplink, seconds: float) -> float:
    """Bytes the sender handed to the link over ``seconds`` (after a settling second)."""
    time.sleep(1.0)  # a piece already past the bucket may still be counted
    before = uplink.sent()
    time.sleep(seconds)
    return uplink.sent() - before


def test_pause_stops_bytes_leaving_and_resume_restarts_them(
    uplink: RunningUplink, tmp_path: Path, kafka_bootstrap: str, token_file: Path
) -> None:
    ctl = Ctl(
        {"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_UPLINK_URL": uplink.base}
    )
    _publish(kafka_bootstrap, _seal(tmp_path / "outgoing", "trailer-x"))
    wait_until(lambda: uplink.sent() > 100_000, 60, "upload under way")

    paused = ctl("uplink", "pause", "--json")
    assert paused.code == 0, paused.err
    assert paused.json()["paused"] is True and paused.json()["paused_until"] is None
    assert paused.json()["changed_by"]
    assert _steady(uplink, 2.0) == 0, "bytes left while paused"

    resumed = ctl("uplink", "resume", "--json")
    assert resumed.code == 0 and resumed.json()["paused"] is False
    moving = _steady(uplink, 1.5)
    assert moving > 0.5 * SCHEDULED_CAP, f"only {moving} B in 1.5 s after resume"

    # A pause with an end lifts itself.
    timed = ctl("uplink", "pause", "--until", "3s", "--json")
    assert timed.code == 0 and timed.json()["paused_until"] > time.time()
    wait_until(
        lambda: not ctl("uplink", "status", "--json").json()["paused"], 10, "timed pause over"
    )


def test_cap_lowers_the_rate_survives_kill9_and_bad_input_changes_nothing(
    uplink: RunningUplink, token_file: Path
) -> None:
    ctl = Ctl(
        {"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_UPLINK_URL": uplink.base}
    )
    capped = ctl("uplink", "cap", "400kbit", "--until", "1h", "--json")
    assert capped.code == 0, capped.err
    doc = capped.json()
    assert doc["cap_bytes_per_second"] == 50_000
    assert doc["scheduled_cap_bytes_per_second"] == SCHEDULED_CAP
    assert doc["effective_cap_bytes_per_second"] == 50_000
    assert 3500 < doc["cap_until"] - time.time() <= 3600
    loose = ctl("uplink", "cap", "1MB", "--json").json()
    assert loose["effective_cap_bytes_per_second"] == SCHEDULED_CAP  # the lower one applies
    ctl("uplink", "cap", "400kbit")
    wait_until(
        lambda: sample(uplink.base, "trailerlink_uplink_bandwidth_cap_bytes_per_second") == 50_000,
        10,
        "cap metric shows the operator's cap",
    )

    before = ctl("uplink", "status", "--json").json()
    for args, code in (
        (("cap", "fast"), 2),
        (("cap", "0"), 2),
        (("cap", "5kB/h"), 2),
        (("pause", "--until", "yesterday"), 2),
        (("pause", "--until", "2001-01-01T00:00"), 2),
    ):
        result = ctl("uplink", *args)
        assert result.code == code, (args, result.err)
        assert result.err.startswith("trailerlinkctl: ")
    assert ctl("uplink", "pause", token=False).code == 4
    assert ctl("uplink", "pause", TRAILERLINKCTL_TOKEN_FILE=str(token_file) + ".nope").code == 4
    assert ctl("uplink", "status", "--json").json() == before

    # The operator's cap outlives a crash of the uplink.
    uplink.proc.kill9()
    uplink.proc.start()
    uplink.proc.wait_ready(f"{uplink.base}/readyz", timeout=90)
    assert ctl("uplink", "status", "--json").json() == before
    unreachable = ctl("uplink", "status", TRAILERLINKCTL_UPLINK_URL="http://127.0.0.1:9")
    assert unreachable.code == 5
