"""Reading a running service's /metrics, and publishing events, in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families
from trailerlink_events.kafka import EventProducer


def samples(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric ``name`` on ``base``/metrics: sorted label pairs -> value."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def sample(base: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for key, value in samples(base, name).items():
        if all(dict(key).get(k) == v for k, v in labels.items()):
            return value
    return None


def publish_events(bootstrap: str, items: Sequence[tuple[str, str, Message]]) -> None:
    """Publish (topic, key, event) in order; returns when the broker acknowledged all."""

    async def run() -> None:
        producer = EventProducer(bootstrap, client_id="test-publisher")
        await producer.start()
        try:
            for topic_name, key, event in items:
                await producer.publish(topic_name, key, event)
        finally:
            await producer.stop()

    asyncio.run(run())
