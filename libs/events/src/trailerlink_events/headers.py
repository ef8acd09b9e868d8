"""The names of the record headers trailerlink writes, and how a record's headers are read.

Kept apart because they are a wire contract, not a part of either end: the producer
writes the event-type header, the consumer checks it and writes the dead-letter
headers, and the dead-letter tooling (``trailerlink_events.deadletters``) reads them
back. Each of those imports the names from here, so none depends on another for them.
"""

from __future__ import annotations

from collections.abc import Sequence

EVENT_TYPE_HEADER = "trailerlink-event-type"
# Dead-letter headers: why a record was set aside, and where it came from.
DLQ_REASON = "trailerlink-dlq-reason"
DLQ_ATTEMPTS = "trailerlink-dlq-attempts"
DLQ_SOURCE_TOPIC = "trailerlink-dlq-source-topic"
DLQ_SOURCE_PARTITION = "trailerlink-dlq-source-partition"
DLQ_SOURCE_OFFSET = "trailerlink-dlq-source-offset"
DLQ_CONSUMER_GROUP = "trailerlink-dlq-consumer-group"
DLQ_FAILED_AT = "trailerlink-dlq-failed-at"


def _headers_to_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return {k: v for k, v in (headers or ())}
