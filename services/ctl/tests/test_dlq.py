"""`trailerlinkctl dlq` against a fleet monitor and the real broker: a poison message
dead-lettered by a real ConsumerRunner is listed, shown, replayed once its cause is
fixed (and then succeeds), or discarded with an audit record; bad input changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, Delivery, EventProducer, PermanentError
from trailerlink_events.messages import Heartbeat, new_meta
from trailerlink_testing.kafka_reader import read_events, start_group_at_end
from trailerlink_testing.waiting import async_wait_until

pytestmark = pytest.mark.kafka
SOURCE = topics.CENTRAL_HEARTBEAT


class PoisonConsumer:
    """A real consumer whose handler refuses the keys in ``poisoned`` (the "cause")."""

    def __init__(self) -> None:
        self.poisoned: set[str] = set()
        self.handled: list[str] = []

    async def handle(self, delivery: Delivery) -> None:
        if delivery.key in self.poisoned:
            raise PermanentError(f"poison: no such trailer {delivery.key}")
        self.handled.append(delivery.key)


@pytest.fixture
async def poison(
    kafka_bootstrap: str, unique_group: str
) -> AsyncIterator[tuple[PoisonConsumer, EventProducer]]:
    await start_group_at_end(kafka_bootstrap, unique_group, [SOURCE])
    producer = EventProducer(kafka_bootstrap, client_id="ctl-test")
    await producer.start()
    consumer = PoisonConsumer()
    runner = ConsumerRunner(
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_group,
        topics=[SOURCE],
        handler=consumer.handle,
        producer=producer,
        dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield consumer, producer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await producer.stop()


async def _dead_letter(ctl, consumer: PoisonConsumer, producer: EventProducer) -> dict:
    """Publish a poison heartbeat; return its DLQ entry as `dlq list --json` shows it."""
    key = f"ctl-{uuid.uuid4().hex[:10]}"
    consumer.poisoned.add(key)
    await producer.publish(SOURCE, key, Heartbeat(meta=new_meta("test", key), sequence=1))

    async def listed() -> dict | None:
        result = await ctl.run("dlq", "list", "--json")
        assert result.code == 0, result.err
        return next((e for e in result.json()["entries"] if e["key"] == key), None)

    return await async_wait_until(listed, 60, f"dead letter {key} listed", interval=0.5)


async def test_replay_after_cause_fixed_succeeds_and_is_audited(ctl, poison) -> None:
    consumer, producer = poison
    entry = await _dead_letter(ctl, consumer, producer)
    assert entry["status"] == "pending"
    assert entry["source_topic"] == SOURCE
    assert entry["topic"] == topics.CENTRAL_DEAD_LETTER
    assert "poison" in entry["reason"]
    assert entry["attempts"] == 1
    assert entry["event_type"].endswith("Heartbeat")

    shown = await ctl.run("dlq", "show", entry["id"], "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["key"] == entry["key"] and shown.json()["actions"] == []

    consumer.poisoned.discard(entry["key"])  # the cause is fixed
    replayed = await ctl.run("dlq", "replay", entry["id"], "--reason", "trailer enrolled", "--json")
    assert replayed.code == 0, replayed.err
    [result] = replayed.json()["results"]
    assert result["ok"] and result["action"] == "replayed" and result["id"] == entry["id"]
    assert result["reason"] == "trailer enrolled" and result["actor"]

    await async_wait_until(lambda: _handled(consumer, entry["key"]), 30, "replayed record handled")
    pending = (await ctl.run("dlq", "list", "--json")).json()["entries"]
    assert entry["id"] not in {e["id"] for e in pending}
    everything = (await ctl.run("dlq", "list", "--all", "--json")).json()["entries"]
    assert {e["id"]: e["status"] for e in everything}[entry["id"]] == "replayed"
    trail = (await ctl.run("dlq", "show", entry["id"], "--json")).json()
    assert [a["action"] for a in trail["actions"]] == ["replayed"]
    assert trail["actions"][0]["reason"] == "trailer enrolled"


async def test_discard_needs_a_reason_hides_the_entry_and_records_who_why(
    ctl, poison, kafka_bootstrap: str
) -> None:
    consumer, producer = poison
    entry = await _dead_letter(ctl, consumer, producer)

    no_reason = await ctl.run("dlq", "discard", entry["id"])
    assert no_reason.code == 2 and "--reason" in no_reason.err
    blank = await ctl.run("dlq", "discard", entry["id"], "--reason", "  ")
    assert blank.code == 2
    assert (await ctl.run("dlq", "show", entry["id"], "--json")).json()["status"] == "pending"

    discarded = await ctl.run("dlq", "discard", entry["id"], "--reason", "test trailer, scrapped")
    assert discarded.code == 0, discarded.err
    assert "discarded" in discarded.out
    pending = (await ctl.run("dlq", "list", "--json")).json()["entries"]
    assert entry["id"] not in {e["id"] for e in pending}
    trail = (await ctl.run("dlq", "show", entry["id"], "--json")).json()
    assert trail["status"] == "discarded"
    assert trail["actions"][0]["reason"] == "test trailer, scrapped"
    assert trail["actions"][0]["actor"] and trail["actions"][0]["at"] > 0

    # Discarded is final: neither replay nor a second discard does anything.
    again = await ctl.run("dlq", "replay", entry["id"], "--json")
    assert again.code == 6 and "discarded" in again.json()["error"]
    assert (await ctl.run("dlq", "discard", entry["id"], "--reason", "x")).code == 6
    # The source topic still holds the one original record: nothing was replayed.
    records = await read_events(
        kafka_bootstrap, SOURCE, lambda seen: len(seen) >= 1, match=lambda d: d.key == entry["key"]
    )
    assert len(records) == 1


async def test_bad_ids_and_missing_credentials_change_nothing(ctl, poison) -> None:
    consumer, producer = poison
    entry = await _dead_letter(ctl, consumer, producer)

    malformed = await ctl.run("dlq", "replay", "not-an-id")
    assert malformed.code == 2 and "<partition>:<offset>" in malformed.err
    # One good id and one that does not exist: nothing is replayed.
    mixed = await ctl.run("dlq", "replay", entry["id"], "0:999999999", "--json")
    assert mixed.code == 3, mixed.err
    assert "no dead letter 0:999999999" in mixed.json()["error"]
    assert (await ctl.run("dlq", "show", "97:0")).code == 3

    no_token = await ctl.run("dlq", "replay", entry["id"], token=False)
    assert no_token.code == 4 and "TRAILERLINKCTL_TOKEN_FILE" in no_token.err
    wrong = await ctl.run(
        "dlq",
        "discard",
        entry["id"],
        "--reason",
        "x",
        TRAILERLINKCTL_TOKEN_FILE="/nonexistent/token",
    )
    assert wrong.code == 4

    trail = (await ctl.run("dlq", "show", entry["id"], "--json")).json()
    assert trail["status"] == "pending" and trail["actions"] == []
    assert entry["key"] not in consumer.handled


async def _handled(consumer: PoisonConsumer, key: str) -> bool:
    return key in consumer.handled
