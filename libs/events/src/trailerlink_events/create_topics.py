"""Create this site's Kafka topics from the topic registry baked into the service image.

Run by the charts' topic Jobs in a trailerlink service image, which carries the
registry (proto/topics.yaml, as trailerlink_events reads it) of the release being
installed. Creates what is missing, changes nothing that exists, and exits 0 only when
every registry topic of the site is there. Waits for the broker until the deadline:
the Job runs while Kafka may still be starting.

    python -m trailerlink_events.create_topics --site trailer --replication-factor 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from trailerlink_events.kafka import create_topics, list_topics
from trailerlink_events.topics import topics_for_site

RETRY_SECONDS = 5.0


def _say(message: str) -> None:
    print(f"create-topics: {message}", file=sys.stderr, flush=True)


async def _run(bootstrap: str, site: str, replication_factor: int, deadline: float) -> int:
    wanted = {t.name for t in topics_for_site(site)}  # type: ignore[arg-type]
    attempt = 0
    while True:
        attempt += 1
        try:
            created = await create_topics(bootstrap, site, replication_factor)  # type: ignore[arg-type]
            existing = await list_topics(bootstrap)
        except Exception as exc:  # the broker is not up yet, or a transient error
            if time.monotonic() > deadline:
                _say(f"giving up after {attempt} attempts: {type(exc).__name__}: {exc}")
                return 1
            _say(f"attempt {attempt}: {type(exc).__name__}; retrying in {RETRY_SECONDS:.0f}s")
            await asyncio.sleep(RETRY_SECONDS)
            continue
        for name in sorted(created):
            _say(f"created {name}")
        missing = sorted(wanted - existing)
        if not missing:
            _say(f"all {len(wanted)} {site} topics exist ({len(created)} created now)")
            return 0
        if time.monotonic() > deadline:
            _say(f"still missing after {attempt} attempts: {', '.join(missing)}")
            return 1
        await asyncio.sleep(RETRY_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", choices=["trailer", "central"], required=True)
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS")
    )
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--deadline-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if not args.bootstrap_servers:
        parser.error("--bootstrap-servers or TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS is required")
    deadline = time.monotonic() + args.deadline_seconds
    return asyncio.run(_run(args.bootstrap_servers, args.site, args.replication_factor, deadline))


if __name__ == "__main__":
    raise SystemExit(main())
