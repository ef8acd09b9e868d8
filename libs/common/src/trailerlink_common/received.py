"""The gateway's receive time on the tus hop.

The uplink states when the trailer's gateway received an object (its C-STORE) in a
header of the upload's creation, as it does ``traceparent``: an ingest of the release
before ignores a header, where an unknown Upload-Metadata key would be refused. The
ingest keeps the time beside the upload and puts it in upload-completed and
object-delivered, so the data centre's audit trail and its acquisition -> PACS latency
start at the trailer's C-STORE, not at the upload. A time only, never patient data.
"""

from __future__ import annotations

import math
import time

RECEIVED_AT_HEADER = "Trailerlink-Received-At"
_EARLIEST = 946684800.0  # 2000-01-01: anything before is a clock that was never set
_AHEAD_SLACK_SECONDS = 86400.0  # a trailer clock ahead by more is not believed


def format_received_at(seconds: float) -> str:
    """The header value: unix seconds with microseconds (what the event Timestamps hold)."""
    return f"{seconds:.6f}"


def parse_received_at(value: str | None, now: float | None = None) -> float | None:
    """Unix seconds from the header; None when absent or not a plausible receive time.
    A bad value is dropped, never refused: it costs the audit trail a time, not an image."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    current = time.time() if now is None else now
    if not math.isfinite(seconds) or not _EARLIEST <= seconds <= current + _AHEAD_SLACK_SECONDS:
        return None
    return seconds
