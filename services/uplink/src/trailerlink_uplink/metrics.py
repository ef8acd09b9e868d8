"""The uplink's Prometheus metrics (``trailerlink_uplink_*``; labels carry no patient data)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BACKLOG_OBJECTS = Gauge("trailerlink_uplink_backlog_objects", "Objects queued and not yet uploaded")
BACKLOG_BYTES = Gauge("trailerlink_uplink_backlog_bytes", "Sealed bytes queued, not yet uploaded")
OLDEST_UNSENT_AGE = Gauge(
    "trailerlink_uplink_oldest_unsent_age_seconds",
    "Age (since acquisition) of the oldest object not yet uploaded; 0 when none",
)
AWAITING_RECEIPT = Gauge(
    "trailerlink_uplink_awaiting_receipt_objects", "Objects uploaded whose receipt has not come"
)
FAILED_OBJECTS = Gauge(
    "trailerlink_uplink_failed_objects",
    "Objects failed for good (a failed receipt, a refused upload, an unsendable sealed "
    "file): out of the send queue until support queues them again",
)
SEALED_FILE_FAILURES = Counter(
    "trailerlink_uplink_sealed_file_failures_total",
    "Objects taken out of the send queue because their sealed file is missing, unreadable "
    "or does not match its event (ObjectFailed published)",
    ["kind"],
)
for _kind in ("missing", "unreadable", "corrupt"):
    SEALED_FILE_FAILURES.labels(_kind)  # exported as 0 from the start: increase() sees the first
REFUSED_OBJECTS = Counter(
    "trailerlink_uplink_objects_refused_total",
    "Objects taken out of the send queue because the ingest refused their upload for good "
    "(ObjectFailed published), by reason: unknown_key (sealed for a key the data centre "
    "no longer holds), invalid_metadata, too_large, other",
    ["reason"],
)
for _reason in ("unknown_key", "invalid_metadata", "too_large", "other"):
    REFUSED_OBJECTS.labels(_reason)
GOODPUT = Gauge(
    "trailerlink_uplink_goodput_bytes_per_second",
    "Bytes the server acknowledged per second (moving average over about a minute)",
)
ACKED_BYTES = Counter(
    "trailerlink_uplink_acknowledged_bytes_total", "Bytes the server acknowledged (new offsets)"
)
SENT_BYTES = Counter("trailerlink_uplink_sent_bytes_total", "Bytes written to PATCH bodies")
RESENT_BYTES = Counter("trailerlink_uplink_resent_bytes_total", "Bytes sent again after a failure")
CHUNK_RETRIES = Counter(
    "trailerlink_uplink_chunk_retries_total",
    "PATCH requests that failed and were retried",
    ["kind"],
)
LINK_ERRORS = Counter(
    "trailerlink_uplink_link_errors_total",
    "Failed requests by kind: dns, tls, connect, timeout, reset, http_5xx, http_4xx",
    ["kind"],
)
HTTP_REFUSALS = Counter(
    "trailerlink_uplink_http_refusals_total",
    "Requests of an upload the ingest answered with an error status, by status "
    "(423: the upload is still locked by a connection the ingest has not yet seen die)",
    ["status"],
)
for _status in ("400", "403", "408", "409", "423", "429", "500", "503"):
    HTTP_REFUSALS.labels(_status)  # exported as 0 from the start: increase() sees the first
LINK_STATE = Gauge(
    "trailerlink_uplink_link_state", "1 for the current link state (up, degraded, down)", ["state"]
)
LINK_UP = Gauge("trailerlink_uplink_link_up", "1 when the ingest answers, else 0")
UPLOADS = Counter(
    "trailerlink_uplink_uploads_total",
    "Uploads by outcome: created, resumed, recreated, completed",
    ["outcome"],
)
UPLOAD_SECONDS = Histogram(
    "trailerlink_uplink_upload_seconds",
    "Time from first byte to completed upload of one object",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
BANDWIDTH_CAP = Gauge(
    "trailerlink_uplink_bandwidth_cap_bytes_per_second",
    "Cap in force now (the lower of the schedule's and the operator's); 0 = uncapped. "
    "A pause is not a cap: see trailerlink_uplink_paused",
)
PAUSED = Gauge(
    "trailerlink_uplink_paused",
    "1 while an operator's pause holds every upload (trailerlinkctl uplink pause), else 0",
)
OPERATOR_CAP = Gauge(
    "trailerlink_uplink_operator_cap_bytes_per_second",
    "The operator's cap in force (trailerlinkctl uplink cap); 0 = none set",
)
RECEIPTS = Counter("trailerlink_uplink_receipts_total", "Receipts handled by outcome", ["outcome"])
RECEIPTS_LAG = Gauge(
    "trailerlink_uplink_receipts_lag_seconds",
    "Age of the oldest uploaded object still waiting for its receipt; 0 when none",
)
RECEIPTS_LAST_POLL = Gauge(
    "trailerlink_uplink_receipts_last_success_timestamp_seconds", "When receipts last answered"
)
PURGED = Counter(
    "trailerlink_uplink_janitor_deleted_files_total", "Files the janitor deleted", ["kind"]
)
PURGED_BYTES = Counter("trailerlink_uplink_janitor_deleted_bytes_total", "Bytes the janitor freed")
