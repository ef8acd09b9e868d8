"""The ingest's Prometheus metrics (labels never carry patient data)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPLOADS_ACTIVE = Gauge(
    "trailerlink_ingest_uploads_active",
    "Upload requests (POST/PATCH with a body) being received now",
)
UPLOADS_CREATED = Counter(
    "trailerlink_ingest_uploads_created_total", "Uploads created", ["trailer"]
)
UPLOADS_COMPLETED = Counter(
    "trailerlink_ingest_uploads_completed_total", "Uploads whose last byte arrived", ["trailer"]
)
BYTES_RECEIVED = Counter(
    "trailerlink_ingest_bytes_received_total", "Sealed bytes made durable, per trailer", ["trailer"]
)
STORAGE_FULL = Counter(
    "trailerlink_ingest_storage_full_total",
    "tus requests refused 507 because the shared uploads volume was full",
)
REQUESTS_REFUSED = Counter(
    "trailerlink_ingest_requests_refused_total",
    "tus/receipt requests answered 4xx, by status",
    ["status"],
)
AUTH_REFUSALS = Counter(
    "trailerlink_ingest_auth_refusals_total",
    "Callers refused at the HTTP layer, by reason",
    ["reason"],
)
CHECKSUM_MISMATCHES = Counter(
    "trailerlink_ingest_checksum_mismatches_total", "PATCH bodies refused with 460"
)
PROCESSING_SECONDS = Histogram(
    "trailerlink_ingest_processing_seconds",
    "Time from taking an upload-completed event to its outcome (unseal, verify, store)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
VERIFY_FAILURES = Counter(
    "trailerlink_ingest_verify_failures_total",
    "Uploads that did not open or verify, by reason",
    ["reason"],
)
UID_CONFLICTS = Counter(
    "trailerlink_ingest_uid_conflicts_total",
    "Same SOP Instance UID received with different content (alert)",
)
DUPLICATES = Counter(
    "trailerlink_ingest_duplicates_total",
    "Objects received again with the same content (no second store)",
)
PACS_STORE_SECONDS = Histogram(
    "trailerlink_ingest_pacs_store_seconds",
    "C-STORE latency (association + store)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PACS_STORE_FAILURES = Counter(
    "trailerlink_ingest_pacs_store_failures_total",
    "C-STORE attempts that failed, by kind",
    ["kind"],
)
DELIVERED = Counter("trailerlink_ingest_objects_delivered_total", "Objects stored in PACS")
FAILED = Counter(
    "trailerlink_ingest_objects_failed_total", "Failed outcomes, by reason", ["reason"]
)
PACS_BACKLOG = Gauge(
    "trailerlink_ingest_pacs_backlog_objects",
    "Objects verified and claimed but not yet stored in PACS (ledger)",
)
LOSSLESS_FALLBACKS = Counter(
    "trailerlink_ingest_lossless_fallbacks_total",
    "Objects sent in another lossless transfer syntax than received",
)
UPLOAD_BODIES_INTERRUPTED = Counter(
    "trailerlink_ingest_upload_bodies_interrupted_total",
    "Upload request bodies that ended early, by reason: disconnect (the client closed), "
    "idle (no bytes for TRAILERLINK_BODY_IDLE_TIMEOUT_SECONDS: a silently dead link), "
    "takeover (the lock was handed to the client's resumed request)",
    ["reason"],
)
for _reason in ("disconnect", "idle", "takeover"):
    UPLOAD_BODIES_INTERRUPTED.labels(_reason)  # exported as 0 from the start
COMPLETIONS_REFUSED = Counter(
    "trailerlink_ingest_completions_refused_total",
    "Uploads whose last bytes arrived after their trailer stopped being admitted (revoked "
    "while uploading): not completed, never sent to PACS; by reason",
    ["reason"],
)
for _reason in ("revoked", "not_allowed"):
    COMPLETIONS_REFUSED.labels(_reason)
EXPIRED_UPLOADS = Counter(
    "trailerlink_ingest_uploads_expired_total",
    "Uploads the sweeper removed, by reason: abandoned (unfinished, idle for "
    "UPLOAD_EXPIRY_SECONDS), failed (a failed receipt that old)",
    ["reason"],
)
EXPIRED_BYTES = Counter(
    "trailerlink_ingest_expired_bytes_total",
    "Bytes on the shared upload volume freed by removing expired uploads, by reason",
    ["reason"],
)
for _reason in ("abandoned", "failed"):
    EXPIRED_UPLOADS.labels(_reason)
    EXPIRED_BYTES.labels(_reason)
TLS_HANDSHAKE_FAILURES = Counter(
    "trailerlink_ingest_tls_handshake_failures_total",
    "TLS handshakes refused or failed on the HTTPS port (TLS terminated in the pod), by "
    "reason: no_certificate, unknown_ca, expired, not_yet_valid, bad_certificate, "
    "protocol_version, not_tls, client_refused, timeout, closed, other",
    ["reason"],
)
for _reason in (
    "no_certificate",
    "unknown_ca",
    "expired",
    "not_yet_valid",
    "bad_certificate",
    "protocol_version",
    "not_tls",
    "client_refused",
    "timeout",
    "closed",
    "other",
):
    TLS_HANDSHAKE_FAILURES.labels(_reason)
UPLOAD_REFUSALS = Counter(
    "trailerlink_ingest_upload_refusals_total",
    "Upload creations refused, by trailer and reason: unknown_key, invalid_metadata, "
    "too_large (permanent: the uplink fails that object alone), no_certificate, "
    "trailer_refused, rate_limited, too_many_uploads, busy, bad_protocol, other",
    ["trailer", "reason"],
)

# Every known label exported as 0 from the start: a counter that appears only with its
# first increment is invisible to increase(), and its first failure would not alert.
for _kind in ("no_context", "association", "no_response", "busy", "refused"):
    PACS_STORE_FAILURES.labels(_kind)
for _reason in (
    "verify_failed",
    "uid_conflict",
    "pacs_refused",
    "unparseable",
    "unsealable",
    "deadline_exceeded",
    "unspecified",
):
    FAILED.labels(_reason)
    VERIFY_FAILURES.labels(_reason)

CONNECTIONS_CLOSED = Counter(
    "trailerlink_ingest_connections_closed_total",
    "Connections the ingest closed itself, by reason (request_head_deadline: a request "
    "line and headers not complete in time)",
    ["reason"],
)
CONNECTIONS_CLOSED.labels("request_head_deadline")  # exported as 0 from the start
