"""`make demo`: what can be shown end to end today, and an honest list of what cannot.

The full demo — a trailer day from a simulated modality into a real PACS, with a final
JSON summary — is issue #10. Until the services it needs exist, this starts a real
Kafka broker, creates the registry's topics, sends one event through the shared
plumbing (producer -> consumer runner) and reports which services are still skeletons.
It exits non-zero if any of that fails.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from trailerlink_events import messages as m
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, Delivery, EventProducer
from trailerlink_testing.kafka import KafkaBroker

SERVICES = ["gateway", "codec", "uplink", "ingest", "worklist", "monitor"]


async def round_trip(bootstrap: str) -> float:
    producer = EventProducer(bootstrap, client_id="demo")
    await producer.start()
    got = asyncio.Event()
    started = time.perf_counter()

    async def handler(d: Delivery) -> None:
        if d.key == "1.2.826.0.1.3680043.10.1234.1":
            got.set()

    stop = asyncio.Event()
    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        group_id="demo",
        topics=[topics.OBJECT_RECEIVED],
        handler=handler,
        producer=producer,
        dead_letter_topic=topics.TRAILER_DEAD_LETTER,
    )
    task = asyncio.create_task(runner.run(stop))
    event = m.ObjectReceived(
        meta=m.new_meta("demo", "trailer-demo"),
        object=m.ObjectIdentity(study_instance_uid="1.2.826.0.1.3680043.10.1234.1"),
    )
    await producer.publish(topics.OBJECT_RECEIVED, event.object.study_instance_uid, event)
    await asyncio.wait_for(got.wait(), 60)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await producer.stop()
    return elapsed


def service_state(name: str) -> str:
    main = importlib.import_module(f"trailerlink_{name}.main")
    return "skeleton" if "skeleton" in (main.__doc__ or "").lower() else "implemented"


def main() -> int:
    # The client logs broker start-up noise (coordinator not ready yet) at ERROR.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    print("trailerlink demo — the end-to-end trailer day is issue #10 and not built yet.\n")
    with tempfile.TemporaryDirectory(prefix="trailerlink-demo-") as tmp:
        broker = KafkaBroker(Path(tmp))
        print("starting Kafka (KRaft, one node) ...", flush=True)
        broker.start()
        try:
            created = broker.create_topics("trailer") + broker.create_topics("central")
            print(f"  ready at {broker.bootstrap}; {len(created)} topics from proto/topics.yaml")
            seconds = asyncio.run(round_trip(broker.bootstrap))
            print(f"  one ObjectReceived event through producer -> consumer runner: {seconds:.2f}s")
        finally:
            broker.stop()
    states = {name: service_state(name) for name in SERVICES}
    print("\nservices:")
    for name, state in states.items():
        print(f"  trailerlink-{name:9} {state}")
    print("\nnot there yet: a simulated modality, Orthanc as PACS, the WAN path, the summary.")
    print(json.dumps({"ok": False, "demo": "foundation-only", "services": states}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
