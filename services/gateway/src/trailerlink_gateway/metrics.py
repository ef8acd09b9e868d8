"""The gateway's Prometheus metrics (``trailerlink_gateway_*``). Labels never carry
patient data: SOP class keywords, outcomes and reasons only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OBJECTS_RECEIVED = Counter(
    "trailerlink_gateway_objects_received_total",
    "Objects stored durably and acknowledged (new copies, not duplicates), by SOP class",
    ["sop_class"],
)
BYTES_RECEIVED = Counter(
    "trailerlink_gateway_received_bytes_total",
    "Dataset bytes of objects stored durably, by SOP class",
    ["sop_class"],
)
STORE_SECONDS = Histogram(
    "trailerlink_gateway_store_seconds",
    "Time from the start of a C-STORE data set to the answer, by outcome",
    ["outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
STORE_OUTCOMES = Counter(
    "trailerlink_gateway_stores_total",
    "C-STORE requests answered, by outcome (stored, duplicate, conflict or a refusal)",
    ["outcome"],
)
REJECTS = Counter(
    "trailerlink_gateway_rejects_total",
    "Associations, presentation contexts and stores refused, by reason",
    ["reason"],
)
UID_CONFLICTS = Counter(
    "trailerlink_gateway_uid_conflicts_total",
    "Objects received with a SOP Instance UID already held with different bytes (alert on it)",
)
SPOOL_BYTES = Gauge(
    "trailerlink_gateway_spool_bytes", "Bytes of encrypted objects the spool index holds"
)
SPOOL_OBJECTS = Gauge("trailerlink_gateway_spool_objects", "Object copies the spool index holds")
SPOOL_FREE_BYTES = Gauge(
    "trailerlink_gateway_spool_free_bytes", "Free bytes on the spool filesystem"
)
SPOOL_WATERMARK_BYTES = Gauge(
    "trailerlink_gateway_spool_min_free_bytes",
    "Free-space watermark below which stores are refused",
)
ASSOCIATIONS_ACTIVE = Gauge(
    "trailerlink_gateway_associations_active", "DICOM associations open now"
)
ASSOCIATIONS = Counter("trailerlink_gateway_associations_total", "DICOM associations accepted")
COMMITMENTS_PENDING = Gauge(
    "trailerlink_gateway_commitments_pending", "Storage commitment requests not yet answered"
)
COMMITMENTS_ANSWERED = Counter(
    "trailerlink_gateway_commitments_answered_total",
    "Storage commitment requests answered by N-EVENT-REPORT, by result",
    ["result"],
)
COMMITMENT_REPORT_FAILURES = Counter(
    "trailerlink_gateway_commitment_report_failures_total",
    "N-EVENT-REPORTs that could not be delivered to the modality (retried later)",
)
COMMITMENT_LAST_PASS = Gauge(
    "trailerlink_gateway_commitment_last_pass_timestamp_seconds",
    "When the storage commitment loop last judged the open requests (alert if stale)",
)
