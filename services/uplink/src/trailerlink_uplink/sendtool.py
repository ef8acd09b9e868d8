"""Measure the link: upload synthetic sealed-size objects with the uplink's own sender
and print what it achieved, as JSON. Used by the shaping tests and the benchmarks; also
a site check ("what goodput does this trailer get to the ingest right now").

    python -m trailerlink_uplink.sendtool --url http://10.237.1.2:8080/files/ \\
        --work /tmp/run --sizes 500000,500000 --chunk 1048576 --rate 0
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import STATE_UPLOADED, NewObject, SendQueue
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.tus import TusClient, make_http_client

_UID_ROOT = "1.2.826.0.1.3680043.10.1234.9"


def _objects(outgoing: Path, sizes: list[int]) -> list[NewObject]:
    objs = []
    study = f"{_UID_ROOT}.{uuid.uuid4().int % 10**12}"
    for i, size in enumerate(sizes):
        if i % 4 == 0:
            study = f"{_UID_ROOT}.{uuid.uuid4().int % 10**12}"
        sop = f"{_UID_ROOT}.{uuid.uuid4().int % 10**18}"
        rel = f"objects/bench/{sop}.{i:06d}.tlsealed"
        data = os.urandom(size)
        (outgoing / rel).parent.mkdir(parents=True, exist_ok=True)
        (outgoing / rel).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        objs.append(NewObject(
            sealed_path=rel, sop_instance_uid=sop, study_instance_uid=study,
            series_instance_uid=study + ".1", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1", file_sha256=digest,
            dataset_sha256=digest, sealed_sha256=digest, sealed_size=size,
            key_id="dc-0123456789abcdef", codec="bench", priority=1,
            received_at=time.time() + i * 1e-3, sealed_at=time.time()))
    return objs


async def run(url: str, work: Path, sizes: list[int], chunk: int, concurrency: int, rate: int,
              io_timeout: float, probe_interval: float) -> dict[str, float]:
    outgoing = work / "outgoing"
    queue = SendQueue(work / "queue.sqlite")
    for obj in _objects(outgoing, sizes):
        queue.enqueue(obj)
    http = make_http_client(verify=False, connect_timeout=5.0, io_timeout=io_timeout,
                            max_connections=2 * concurrency + 2)
    tus = TusClient(url, http, TokenBucket(CapSchedule(rate, [])))

    async def probe() -> None:
        await tus.discover()

    link = LinkMonitor(probe, probe_interval)
    sender = Sender(queue, tus, link, outgoing, trailer_id="bench", chunk_size=chunk,
                    concurrency=concurrency, backoff_initial=0.2, backoff_max=5.0)
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(sender.run(stop)), asyncio.create_task(link.run_probe(stop))]
    while queue.states().get(STATE_UPLOADED, 0) < len(sizes):  # noqa: ASYNC110 - polls the queue
        await asyncio.sleep(0.02)
    seconds = time.monotonic() - started
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    await http.aclose()
    queue.close()
    sample = lambda name: REGISTRY.get_sample_value(name) or 0.0  # noqa: E731
    return {"bytes": float(sum(sizes)), "seconds": seconds,
            "resent_bytes": sample("trailerlink_uplink_resent_bytes_total"),
            "sent_bytes": sample("trailerlink_uplink_sent_bytes_total")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="tus creation endpoint")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--sizes", required=True, help="comma-separated object sizes (bytes)")
    parser.add_argument("--chunk", type=int, default=1024 * 1024)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=int, default=0, help="cap, bytes/s (0 = none)")
    parser.add_argument("--io-timeout", type=float, default=30.0)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    result = asyncio.run(run(args.url, args.work, sizes, args.chunk, args.concurrency,
                             args.rate, args.io_timeout, args.probe_interval))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
