"""The gateway's receive time the upload's creation states (``Trailerlink-Received-At``)
travels with the upload into upload-completed and object-delivered, so the data
centre's audit trail and latency start at the trailer's C-STORE; without it (an older
uplink, another tus client) the delivery claims no receive time at all, never the
upload's; a malformed one is dropped, never refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from trailerlink_common.received import RECEIVED_AT_HEADER, parse_received_at
from trailerlink_events import topics
from trailerlink_ingest.uploads import UploadStore
from trailerlink_testing.kafka_reader import read_events
from tusclient.client import TusClient

pytestmark = pytest.mark.kafka


def _upload_with(ingest, obj, headers: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    """Upload with tuspy (an independent tus client) sending ``headers`` on every request."""
    client = TusClient(ingest.url, headers=headers, client_cert=ingest.pki.cert("trailer-01"))
    uploader = client.uploader(
        file_path=str(obj.sealed), chunk_size=1 << 20, metadata=obj.metadata, upload_checksum=True
    )
    uploader.upload()
    return uploader.url.rsplit("/", 1)[-1]


async def _events(kafka_bootstrap: str, obj):  # type: ignore[no-untyped-def]
    key = f"trailer-01/{obj.meta.study_instance_uid}"
    [completed] = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_UPLOAD_COMPLETED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    [delivered] = await read_events(
        kafka_bootstrap,
        topics.CENTRAL_OBJECT_DELIVERED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == key,
    )
    return completed.event, delivered.event


async def test_the_gateways_receive_time_reaches_the_delivery_event(
    ingest, objects, kafka_bootstrap
) -> None:  # type: ignore[no-untyped-def]
    obj = objects()
    gateway_at = time.time() - 3 * 3600 - 0.123456  # hours on a paused trailer
    upload_id = _upload_with(ingest, obj, {RECEIVED_AT_HEADER: f"{gateway_at:.6f}"})
    assert ingest.wait_receipt(upload_id)["outcome"] == "delivered"
    completed, delivered = await _events(kafka_bootstrap, obj)
    expected = datetime.fromtimestamp(gateway_at, UTC)
    assert completed.received_at.ToDatetime(UTC) == expected
    assert delivered.received_at == completed.received_at
    # The upload's own time is later by hours: the two are not confused.
    assert completed.completed_at.ToDatetime(UTC).timestamp() - gateway_at > 3 * 3600


async def test_without_the_header_the_delivery_claims_no_receive_time(
    ingest, objects, kafka_bootstrap
) -> None:  # type: ignore[no-untyped-def]
    obj = objects()
    upload_id = ingest.upload(obj)
    assert ingest.wait_receipt(upload_id)["outcome"] == "delivered"
    completed, delivered = await _events(kafka_bootstrap, obj)
    assert not completed.HasField("received_at")
    assert not delivered.HasField("received_at")
    assert completed.HasField("completed_at")


@pytest.mark.parametrize("value", ["yesterday", "nan", "-1", "12", str(time.time() + 9e6)])
def test_a_malformed_receive_time_is_dropped_not_refused(
    ingest,
    objects,  # type: ignore[no-untyped-def]
    value: str,
) -> None:
    upload_id = _post_with_received_at(ingest, objects(), value)
    store = UploadStore(ingest.storage)
    info = store.load("trailer-01", upload_id)
    assert info is not None and store.received_at(info) is None
    with ingest.session() as s:  # leave no unfinished upload to count against the trailer
        assert s.delete(f"{ingest.url}{upload_id}", timeout=10).status_code == 204


def _post_with_received_at(ingest, obj, value: str) -> str:  # type: ignore[no-untyped-def]
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size),
                "Upload-Metadata": obj.meta.encode(),
                RECEIVED_AT_HEADER: value,
            },
            timeout=10,
        )
    assert rsp.status_code == 201, rsp.text
    return rsp.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_the_header_value_round_trips_to_the_microsecond() -> None:
    at = 1764900000.123456
    assert parse_received_at(f"{at:.6f}", now=at) == at
    assert parse_received_at(None) is None and parse_received_at("") is None
