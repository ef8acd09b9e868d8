"""Measure the link: upload synthetic sealed-size objects with the uplink's own sender
and print what it achieved, as JSON. Used by the shaping tests and the benchmarks; also
a site check ("what goodput does this trailer get to the ingest right now").

    python -m trailerlink_uplink.sendtool --url http://198.18.1.2:8080/files/ \\
        --work /tmp/run --sizes 500000,500000 --chunk 1048576 --rate 0

Against the real ingest add ``--ca-file``, ``--cert-file``, ``--key-file`` (mutual TLS) and
``--key-id`` (a sealing key id it holds): the random bytes then fail verification there,
after the upload, which is all this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import time
import uuid
from pathlib import Path

from prometheus_client import REGISTRY
from trailerlink_spool.layout import SEALED_SUFFIX

from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import STATE_UPLOADED, NewObject, SendQueue
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.tus import TusClient, make_http_client, tls_context

_UID_ROOT = "1.2.826.0.1.3680043.10.1234.9"


def _objects(
    outgoing: Path, sizes: list[int], key_id: str = "dc-0123456789abcdef"
) -> list[NewObject]:
    objs = []
    study = f"{_UID_ROOT}.{uuid.uuid4().int % 10**12}"
    for i, size in enumerate(sizes):
        if i % 4 == 0:
            study = f"{_UID_ROOT}.{uuid.uuid4().int % 10**12}"
        sop = f"{_UID_ROOT}.{uuid.uuid4().int % 10**18}"
        rel = f"objects/bench/{sop}.{i:06d}{SEALED_SUFFIX}"
        data = os.urandom(size)
        (outgoing / rel).parent.mkdir(parents=True, exist_ok=True)
        (outgoing / rel).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        objs.append(
            NewObject(
                sealed_path=rel,
                sop_instance_uid=sop,
                study_instance_uid=study,
                series_instance_uid=study + ".1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                file_sha256=digest,
                dataset_sha256=digest,
                sealed_sha256=digest,
                sealed_size=size,
                key_id=key_id,
                codec="bench",
                priority=1,
                received_at=time.time() + i * 1e-3,
                sealed_at=time.time(),
            )
        )
    return objs


async def run(
    url: str,
    work: Path,
    sizes: list[int],
    chunk: int,
    concurrency: int,
    rate: int,
    io_timeout: float,
    probe_interval: float,
    *,
    key_id: str = "dc-0123456789abcdef",
    verify: ssl.SSLContext | bool = False,
) -> dict[str, float]:
    outgoing = work / "outgoing"
    queue = SendQueue(work / "queue.sqlite")
    for obj in _objects(outgoing, sizes, key_id):
        queue.enqueue(obj)
    http = make_http_client(
        verify=verify,
        connect_timeout=5.0,
        io_timeout=io_timeout,
        max_connections=2 * concurrency + 2,
    )
    tus = TusClient(url, http, TokenBucket(CapSchedule(rate, [])))

    async def probe() -> None:
        await tus.discover()

    link = LinkMonitor(probe, probe_interval)
    sender = Sender(
        queue,
        tus,
        link,
        outgoing,
        trailer_id="bench",
        chunk_size=chunk,
        concurrency=concurrency,
        backoff_initial=0.2,
        backoff_max=5.0,
    )
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
    return {
        "bytes": float(sum(sizes)),
        "seconds": seconds,
        "resent_bytes": sample("trailerlink_uplink_resent_bytes_total"),
        "sent_bytes": sample("trailerlink_uplink_sent_bytes_total"),
    }


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
    parser.add_argument(
        "--key-id",
        default="dc-0123456789abcdef",
        help="sealing key id the objects claim (the ingest checks it)",
    )
    parser.add_argument("--ca-file", type=Path, help="HTTPS: CA of the server's certificate")
    parser.add_argument("--cert-file", type=Path, help="HTTPS: this trailer's certificate")
    parser.add_argument("--key-file", type=Path, help="HTTPS: its private key")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    verify: ssl.SSLContext | bool = (
        tls_context(args.ca_file, args.cert_file, args.key_file) if args.ca_file else False
    )
    result = asyncio.run(
        run(
            args.url,
            args.work,
            sizes,
            args.chunk,
            args.concurrency,
            args.rate,
            args.io_timeout,
            args.probe_interval,
            key_id=args.key_id,
            verify=verify,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
