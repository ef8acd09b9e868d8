"""The monitor's Prometheus metrics. Labels carry trailer ids and stages, never patient
data. Fleet metrics are labelled ``trailer_id``; agent metrics describe this trailer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- fleet: per trailer, from heartbeats ---------------------------------------------
T = ["trailer_id"]
TRAILER_EXPECTED = Gauge(
    "trailerlink_monitor_trailer_expected",
    "1 for every trailer in the fleet list (expected to report)",
    T,
)
LAST_HEARTBEAT = Gauge(
    "trailerlink_monitor_trailer_last_heartbeat_timestamp_seconds",
    "When the trailer's newest heartbeat was sent (unix seconds); for a trailer never "
    "heard from: when the monitor started",
    T,
)
HEARTBEAT_AGE = Gauge(
    "trailerlink_monitor_trailer_heartbeat_age_seconds",
    "Seconds since the trailer's newest heartbeat (or since the monitor started)",
    T,
)
HEARTBEATS = Counter("trailerlink_monitor_heartbeats_total", "Heartbeats received", T)
HEARTBEATS_MISSED = Counter(
    "trailerlink_monitor_heartbeats_missed_total",
    "Heartbeats never received (gaps in the sequence)",
    T,
)
BACKLOG_OBJECTS = Gauge(
    "trailerlink_monitor_trailer_backlog_objects", "Objects waiting on the trailer", T
)
BACKLOG_BYTES = Gauge(
    "trailerlink_monitor_trailer_backlog_bytes", "Bytes waiting on the trailer", T
)
OLDEST_UNSENT = Gauge(
    "trailerlink_monitor_trailer_oldest_unsent_age_seconds",
    "Age of the oldest object not yet sent, as of the newest heartbeat",
    T,
)
DISK_FREE = Gauge("trailerlink_monitor_trailer_disk_free_bytes", "Free spool disk", T)
DISK_TOTAL = Gauge("trailerlink_monitor_trailer_disk_total_bytes", "Spool disk size", T)
LINK_UP = Gauge(
    "trailerlink_monitor_trailer_link_up", "1 when the trailer's link is up or degraded", T
)
LINK_GOODPUT = Gauge(
    "trailerlink_monitor_trailer_link_goodput_bytes_per_second", "Upload goodput", T
)
LINK_STATE = Gauge(
    "trailerlink_monitor_trailer_link_state",
    "The trailer's link as its uplink sees it: 1 up, 2 degraded (the ingest answers with "
    "errors), 3 down, 0 unknown (the LinkState enum of the heartbeat)",
    T,
)
UPLINK_PAUSED = Gauge(
    "trailerlink_monitor_trailer_uplink_paused",
    "1 while an operator has paused the trailer's uplink (nothing is sent), else 0",
    T,
)
UPLINK_OPERATOR_CAP = Gauge(
    "trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second",
    "The operator's upload cap on the trailer; 0 = none set",
    T,
)
UPLINK_CAP = Gauge(
    "trailerlink_monitor_trailer_uplink_cap_bytes_per_second",
    "The upload cap in force on the trailer (schedule and operator); 0 = uncapped",
    T,
)
WORKLIST_AGE = Gauge(
    "trailerlink_monitor_trailer_worklist_cache_age_seconds",
    "Age of the trailer's worklist cache",
    T,
)
CANARY_OK = Gauge(
    "trailerlink_monitor_trailer_canary_ok", "1 when the last synthetic canary passed", T
)
CANARY_SECONDS = Gauge(
    "trailerlink_monitor_trailer_canary_seconds", "End-to-end time of the last canary", T
)
CANARY_AT = Gauge(
    "trailerlink_monitor_trailer_canary_timestamp_seconds", "When the last canary ran", T
)
CERTIFICATE_NOT_AFTER = Gauge(
    "trailerlink_monitor_trailer_certificate_expiry_timestamp_seconds",
    "When the trailer's client certificate expires (unix seconds), as its newest "
    "heartbeat reports it",
    T,
)
DEAD_LETTERS = Gauge(
    "trailerlink_monitor_trailer_dead_letters",
    "Records the trailer's services dead-lettered since they started (their "
    "trailerlink_kafka_dead_letters_total summed), as its newest heartbeat reports it; "
    "falls back when a service restarts (increase() treats that as a reset)",
    T,
)
FAILED_OBJECTS = Gauge(
    "trailerlink_monitor_trailer_failed_objects",
    "Objects failed for good in the trailer's send queue, waiting for support, as its "
    "newest heartbeat reports it",
    T,
)
VERSION_INFO = Gauge(
    "trailerlink_monitor_trailer_version_info",
    "1 per component version a trailer reports",
    ["trailer_id", "component", "version"],
)

# --- fleet: objects and completeness ---------------------------------------------------
ACQUISITION_TO_PACS = Histogram(
    "trailerlink_monitor_acquisition_to_pacs_seconds",
    "From the trailer gateway's receipt of an image (its C-STORE: the modality sends as it "
    "acquires) to its storage in PACS; images whose delivery did not carry the gateway's "
    "time are not observed",
    # Sub-minute buckets: with link, an image is in PACS in seconds; hours and days are
    # the paused, dark or wedged trailer.
    buckets=(
        5,
        10,
        15,
        30,
        45,
        60,
        90,
        120,
        300,
        600,
        900,
        1800,
        3600,
        2 * 3600,
        4 * 3600,
        8 * 3600,
        12 * 3600,
        86400,
        2 * 86400,
    ),
)
DELIVERED = Counter(
    "trailerlink_monitor_objects_delivered_total", "Objects stored in PACS (first time)", T
)
FAILED = Counter(
    "trailerlink_monitor_objects_failed_total",
    "Failure events by stage",
    ["trailer_id", "stage", "permanent"],
)
COMPLETENESS_MISSING = Gauge(
    "trailerlink_monitor_completeness_missing_images",
    "Images an MPPS listed as taken that are not in PACS past the deadline",
    T,
)
COMPLETENESS_PENDING = Gauge(
    "trailerlink_monitor_completeness_pending_images",
    "Images an MPPS listed as taken, not in PACS yet, still within the deadline",
    T,
)
EVALUATED_AT = Gauge(
    "trailerlink_monitor_last_evaluation_timestamp_seconds",
    "When fleet gauges and completeness were last recomputed",
)

# --- agent: this trailer ---------------------------------------------------------------
AGENT_HEARTBEATS = Counter(
    "trailerlink_monitor_agent_heartbeats_total", "Heartbeats queued in the trailer's Kafka"
)
AGENT_SCRAPE_FAILURES = Counter(
    "trailerlink_monitor_agent_scrape_failures_total",
    "Local /metrics that could not be read for a heartbeat",
    ["component"],
)
RELAY_SENT = Counter(
    "trailerlink_monitor_relay_events_total", "Events relayed to the data centre", ["topic"]
)
RELAY_FAILURES = Counter(
    "trailerlink_monitor_relay_failures_total", "Relay attempts that failed (retried)"
)
RELAY_RECEIVED = Counter(
    "trailerlink_monitor_relay_received_total",
    "Events a fleet monitor accepted from trailers",
    ["topic"],
)
CERTIFICATE_EXPIRY = Gauge(
    "trailerlink_monitor_agent_certificate_expiry_timestamp_seconds",
    "When a certificate this trailer uses expires (unix seconds)",
    ["certificate"],
)
AGENT_CANARY_RUNS = Counter(
    "trailerlink_monitor_agent_canary_runs_total",
    "Synthetic canary runs by outcome: passed, refused (the gateway did not take it), "
    "timeout (no ObjectDelivered by the deadline), failed (an ObjectFailed came back)",
    ["outcome"],
)
AGENT_CANARY_OK = Gauge(
    "trailerlink_monitor_agent_canary_ok", "1 when the last synthetic canary passed"
)
AGENT_CANARY_LAST_RUN = Gauge(
    "trailerlink_monitor_agent_canary_last_run_timestamp_seconds",
    "When the last synthetic canary started (unix seconds)",
)
AGENT_CANARY_LAST_SUCCESS = Gauge(
    "trailerlink_monitor_agent_canary_last_success_timestamp_seconds",
    "When a synthetic canary last reached PACS (unix seconds)",
)
AGENT_CANARY_SECONDS = Histogram(
    "trailerlink_monitor_agent_canary_seconds",
    "End-to-end time of passed canaries: C-STORE at the gateway to ObjectDelivered",
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
