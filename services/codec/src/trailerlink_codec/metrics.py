"""The codec's Prometheus metrics (``trailerlink_codec_*``). Labels carry codec ids,
outcomes and fallback kinds only — never UIDs or patient data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OBJECTS = Counter(
    "trailerlink_codec_objects_total",
    "Objects handled, by outcome (sealed, reused, failed) and codec",
    ["outcome", "codec"],
)
BYTES_IN = Counter("trailerlink_codec_input_bytes_total", "Original bytes of objects sealed")
BYTES_OUT = Counter("trailerlink_codec_output_bytes_total", "Sealed bytes written")
RATIO = Histogram(
    "trailerlink_codec_compression_ratio",
    "Original size / sealed size of each sealed object",
    ["codec"],
    buckets=(0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 8.0),
)
FALLBACKS = Counter(
    "trailerlink_codec_fallbacks_total",
    "Objects sealed as zstd although they have native pixel data, by why "
    "(round_trip: the codec did not reproduce the bytes; codec_error; unsupported layout)",
    ["kind"],
)
SECONDS_PER_MB = Histogram(
    "trailerlink_codec_seconds_per_megabyte",
    "Wall time to compress, verify and seal one object, per MB (1e6 bytes) of input",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0),
)
SEAL_SECONDS = Histogram(
    "trailerlink_codec_seal_seconds",
    "Wall time to compress, verify and seal one object",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("trailerlink_codec_objects_in_flight", "Objects being sealed right now")
# Failure labels exported as 0 from the start, so the first one is an increase().
OBJECTS.labels("failed", "")
for _kind in ("round_trip", "codec_error", "unsupported"):
    FALLBACKS.labels(_kind)
