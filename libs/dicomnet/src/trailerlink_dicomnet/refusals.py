"""Counting and logging the connections a listener refuses, without a flood of lines."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from trailerlink_dicomnet.dul import RefusalHandler


class _LabelledCounter(Protocol):
    def labels(self, *values: str) -> Any: ...


def refusal_handler(
    counter: _LabelledCounter, log: logging.Logger, interval_seconds: float = 60.0
) -> RefusalHandler:
    """``on_refusal`` for a listener: every refusal counted in ``counter`` by reason, a
    log line (reason, peer address) at most once per reason and peer per interval."""
    last: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def on_refusal(reason: str, peer: str) -> None:
        counter.labels(reason).inc()
        now = time.monotonic()
        with lock:
            if len(last) > 1024:
                last.clear()
            seen = last.get((reason, peer))
            if seen is not None and now - seen < interval_seconds:
                return
            last[(reason, peer)] = now
        log.warning("DICOM connection refused", extra={"reason": reason, "peer_address": peer})

    return on_refusal
