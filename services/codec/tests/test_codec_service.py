"""The codec as a real process against the real broker: ObjectReceived in, ObjectSealed
out; redeliveries and restarts in the middle of an object give one sealed object."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from trailerlink_events.kafka import DLQ_REASON, EventProducer
from trailerlink_events.messages import ObjectReceived, ObjectSealed
from trailerlink_events.topics import (
    OBJECT_FAILED,
    OBJECT_RECEIVED,
    OBJECT_SEALED,
    TRAILER_DEAD_LETTER,
)
from trailerlink_sealed import OpeningKey, OpeningKeyring, unseal_to_bytes
from trailerlink_sealed.testdata import MGSpec
from trailerlink_testing.kafka_reader import read_events, start_group_at_end
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script, http_get
from trailerlink_testing.waiting import wait_until

from .conftest import Spool

pytestmark = pytest.mark.kafka


class Codec:
    def __init__(
        self, proc: ServiceProcess, http_port: int, outgoing: Path, trailer_id: str
    ) -> None:
        self.proc, self.http_port, self.outgoing, self.trailer_id = (
            proc,
            http_port,
            outgoing,
            trailer_id,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def wait_ready(self) -> None:
        self.proc.wait_ready(self.url("/readyz"), timeout=90)

    def metric(self, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in http_get(self.url("/metrics")).splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            have = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
            if metric == name and have == want:
                total += float(value)
        return total

    def sealed_files(self) -> list[Path]:
        return sorted(p for p in self.outgoing.rglob("*") if p.is_file())


@pytest.fixture
def codec_factory(
    tmp_path: Path, kafka_bootstrap: str, spool: Spool, public_keys_dir: Path, unique_group: str
) -> Iterator[Callable[..., Codec]]:
    started: list[ServiceProcess] = []
    key_file = tmp_path / "spool-key"
    spool.key.write_file(key_file)

    def make(**extra: str) -> Codec:
        port = free_port()
        trailer_id = f"trailer-codec-test-{uuid.uuid4().hex[:8]}"
        outgoing = tmp_path / "outgoing"
        env = {
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
            "TRAILERLINK_SPOOL_DIR": str(spool.root),
            "TRAILERLINK_SPOOL_KEY_FILE": str(key_file),
            "TRAILERLINK_OUTGOING_DIR": str(outgoing),
            "TRAILERLINK_SEALING_PUBLIC_KEYS": str(public_keys_dir),
            "TRAILERLINK_TRAILER_ID": trailer_id,
            "TRAILERLINK_CONSUMER_GROUP": unique_group,
            "TRAILERLINK_WORKERS": "2",
            **extra,
        }
        # In its own thread: the async tests call make() while their loop runs.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run, start_group_at_end(kafka_bootstrap, unique_group, [OBJECT_RECEIVED])
            ).result()
        proc = ServiceProcess(
            [console_script("trailerlink-codec")], env=env, log_path=tmp_path / "codec.log"
        )
        started.append(proc)
        proc.start()
        codec = Codec(proc, port, outgoing, trailer_id)
        codec.wait_ready()
        return codec

    yield make
    for proc in started:
        proc.kill9()


async def _publish(bootstrap: str, events: list[ObjectReceived]) -> None:
    producer = EventProducer(bootstrap, client_id="codec-test")
    await producer.start()
    try:
        for event in events:
            await producer.publish(OBJECT_RECEIVED, event.object.study_instance_uid, event)
    finally:
        await producer.stop()


async def _sealed_events(
    bootstrap: str, uids: set[str], count: int, timeout: float = 90
) -> list[ObjectSealed]:
    found = await read_events(
        bootstrap,
        OBJECT_SEALED,
        until=lambda ds: len(ds) >= count,
        match=lambda d: d.event.object.sop_instance_uid in uids,
        timeout=timeout,
    )
    return [d.event for d in found]  # type: ignore[misc]


async def test_object_received_in_object_sealed_out(
    codec_factory: Callable[..., Codec],
    spool: Spool,
    kafka_bootstrap: str,
    dc_key: OpeningKey,
) -> None:
    codec = codec_factory()
    objects = [
        spool.put(MGSpec(rows=512, cols=384, private_after_pixels=True)),
        spool.put(MGSpec(rows=128, cols=96, frames=60)),
    ]
    events = [o.event(codec.trailer_id) for o in objects]
    await _publish(kafka_bootstrap, events)
    sealed = await _sealed_events(kafka_bootstrap, {o.spec.sop_uid for o in objects}, 2)
    by_uid = {e.object.sop_instance_uid: e for e in sealed}
    keyring = OpeningKeyring([dc_key])
    for obj, received in zip(objects, events, strict=True):
        event = by_uid[obj.spec.sop_uid]
        assert event.object == received.object
        assert event.file_sha256 == received.file_sha256
        assert event.dataset_sha256 == received.dataset_sha256
        assert event.codec == "jpegls+zstd" and event.key_id == dc_key.key_id
        assert event.meta.producer == "codec" and event.meta.trailer_id == codec.trailer_id
        path = codec.outgoing / event.sealed_path
        assert path.stat().st_size == event.sealed_size_bytes
        assert event.compression_ratio == pytest.approx(
            received.file_size_bytes / event.sealed_size_bytes
        )
        assert unseal_to_bytes(path, keyring) == obj.data
    assert (
        codec.metric("trailerlink_codec_objects_total", outcome="sealed", codec="jpegls+zstd") == 2
    )
    assert codec.metric("trailerlink_codec_input_bytes_total") == sum(len(o.data) for o in objects)
    assert codec.metric("trailerlink_codec_fallbacks_total", kind="round_trip") == 0

    # A redelivered event reuses the sealed object and repeats the same event.
    await _publish(kafka_bootstrap, events[:1])
    again = await _sealed_events(kafka_bootstrap, {objects[0].spec.sop_uid}, 2)
    assert again[0].meta.event_id == again[1].meta.event_id
    assert again[0].sealed_sha256 == again[1].sealed_sha256
    assert len(codec.sealed_files()) == 2
    wait_until(
        lambda: (
            codec.metric("trailerlink_codec_objects_total", outcome="reused", codec="jpegls+zstd")
            == 1
        ),
        10,
        "reuse counted",
    )
    # UIDs and sizes only in the log: none of the synthetic patient's attributes.
    log = codec.proc.log_path.read_text() if codec.proc.log_path else ""
    assert "object sealed" in log and objects[0].spec.sop_uid in log
    for patient_value in ("TEST^SYNTHETIC", "SYNTHETIC-0001", "19700101"):
        assert patient_value not in log


async def test_missing_spool_object_is_dead_lettered_and_reported(
    codec_factory: Callable[..., Codec], spool: Spool, kafka_bootstrap: str
) -> None:
    codec = codec_factory()
    obj = spool.put(MGSpec(rows=32, cols=32))
    (spool.root / obj.spool_path).unlink()
    await _publish(kafka_bootstrap, [obj.event(codec.trailer_id)])
    failed = await read_events(
        kafka_bootstrap,
        OBJECT_FAILED,
        until=lambda ds: len(ds) >= 1,
        timeout=60,
        match=lambda d: d.event.object.sop_instance_uid == obj.spec.sop_uid,
    )
    assert failed[0].event.stage == "codec.seal" and failed[0].event.permanent
    dead = await read_events(
        kafka_bootstrap,
        TRAILER_DEAD_LETTER,
        until=lambda ds: len(ds) >= 1,
        timeout=60,
        match=lambda d: d.key == obj.spec.study_uid,
    )
    assert b"does not exist" in dead[0].headers[DLQ_REASON]
    assert codec.sealed_files() == []


async def test_restart_mid_object_gives_exactly_one_sealed_object(
    codec_factory: Callable[..., Codec],
    spool: Spool,
    kafka_bootstrap: str,
    dc_key: OpeningKey,
) -> None:
    codec = codec_factory(TRAILERLINK_WORKERS="1", TRAILERLINK_CHUNK_SIZE_BYTES="65536")
    obj = spool.put(MGSpec(rows=1024, cols=1024, frames=40))  # 80 MB: seconds to seal
    await _publish(kafka_bootstrap, [obj.event(codec.trailer_id)])
    wait_until(
        lambda: any(p.name.endswith(".partial") for p in codec.sealed_files()),
        60,
        "the codec to be writing the sealed object",
    )
    codec.proc.kill9()
    assert not [p for p in codec.sealed_files() if p.suffix == ".tlsealed"]

    codec.proc.start()
    codec.wait_ready()
    sealed = await _sealed_events(kafka_bootstrap, {obj.spec.sop_uid}, 1, timeout=120)
    files = codec.sealed_files()
    assert [p.name for p in files] == [Path(sealed[0].sealed_path).name]  # no partials left
    assert unseal_to_bytes(files[0], OpeningKeyring([dc_key])) == obj.data


def test_codec_refuses_to_start_with_a_private_sealing_key(
    tmp_path: Path, spool: Spool, dc_key: OpeningKey
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "dc.pem").write_bytes(dc_key.to_pem())
    spool.key.write_file(tmp_path / "spool-key")
    env = {
        "TRAILERLINK_SEALING_PUBLIC_KEYS": str(keys),
        "TRAILERLINK_DATA_DIR": str(tmp_path),
        "TRAILERLINK_SPOOL_KEY_FILE": str(tmp_path / "spool-key"),
    }
    import os

    done = subprocess.run(
        [console_script("trailerlink-codec")],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"private key" in done.stderr
