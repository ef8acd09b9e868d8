"""Prometheus metrics of the worklist service. Labels never carry patient data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DICOM_REFUSALS = Counter(
    "trailerlink_worklist_dicom_refusals_total",
    "DICOM connections ended by the listener's limits (PDU checks, deadlines, slots, TLS)",
    ["reason"],
)
CFIND_REQUESTS = Counter(
    "trailerlink_worklist_cfind_requests_total",
    "MWL C-FIND requests from modalities, by outcome (success, cancelled, refused, failed)",
    ["outcome"],
)
CFIND_SECONDS = Histogram(
    "trailerlink_worklist_cfind_seconds",
    "Time to answer one MWL C-FIND request (all responses sent)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CFIND_MATCHES = Histogram(
    "trailerlink_worklist_cfind_matches",
    "Scheduled steps returned by one C-FIND",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 200, 500),
)
MPPS_REQUESTS = Counter(
    "trailerlink_worklist_mpps_requests_total",
    "MPPS N-CREATE/N-SET requests, by operation and outcome (a status name)",
    ["operation", "outcome"],
)
CACHE_STEPS = Gauge(
    "trailerlink_worklist_cache_steps", "Scheduled steps in the cache, by status", ["status"]
)
CACHE_AGE = Gauge(
    "trailerlink_worklist_cache_age_seconds",
    "Seconds since the cache last heard from upstream (poll answered or message received)",
)
UPSTREAM_UP = Gauge(
    "trailerlink_worklist_upstream_up",
    "1 while the last contact with the upstream worklist source succeeded",
    ["adapter"],
)
UPSTREAM_SYNCS = Counter(
    "trailerlink_worklist_upstream_syncs_total",
    "Upstream polls or messages, by adapter and outcome",
    ["adapter", "outcome"],
)
WORKLIST_CHANGES = Counter(
    "trailerlink_worklist_changes_total",
    "Scheduled steps added, updated or cancelled in the cache, by source",
    ["change", "source"],
)
HL7_MESSAGES = Counter(
    "trailerlink_worklist_hl7_messages_total",
    "HL7 messages received, by message type and acknowledgement code",
    ["message_type", "ack"],
)
UPSTREAM_DELIVERIES = Counter(
    "trailerlink_worklist_upstream_deliveries_total",
    "Procedure step reports and demographic corrections sent upstream, by kind and outcome",
    ["kind", "outcome"],
)
OUTBOX_PENDING = Gauge(
    "trailerlink_worklist_outbox_pending_events", "Events written but not yet in Kafka"
)
STAFF_ACTIONS = Counter(
    "trailerlink_worklist_staff_actions_total",
    "Staff page actions, by action and outcome",
    ["action", "outcome"],
)
PURGED_STEPS = Counter(
    "trailerlink_worklist_purged_steps_total", "Steps of past days removed from the cache"
)
CHARSET_FALLBACKS = Counter(
    "trailerlink_worklist_upstream_charset_fallbacks_total",
    "Upstream answers or messages with non-ASCII text and no declared character set, "
    "decoded with the configured fallback, by adapter and the character set used",
    ["adapter", "charset"],
)
UPSTREAM_ITEMS_REFUSED = Counter(
    "trailerlink_worklist_upstream_items_refused_total",
    "Upstream worklist items not taken into the cache, by adapter and reason "
    "(undecodable: text not valid in its character set; invalid: no step identity; "
    "out_of_window: scheduled outside today..horizon)",
    ["adapter", "reason"],
)
TRANSLITERATED = Counter(
    "trailerlink_worklist_answers_transliterated_total",
    "C-FIND answers whose names were transliterated for a modality's character set, "
    "by the character set answered",
    ["charset"],
)
