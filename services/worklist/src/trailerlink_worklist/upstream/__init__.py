"""Upstream adapters: where this trailer's bookings come from (NBSS, via the Trust).

Two real implementations, chosen by ``TRAILERLINK_UPSTREAM``: :mod:`.dicom_mwl` polls the
Trust's worklist broker with MWL C-FIND; :mod:`.hl7_listener` takes HL7 v2 messages
over MLLP. Both feed :class:`~trailerlink_worklist.worklist.Worklist` and report the
link in a :class:`LinkStatus`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from trailerlink_worklist import metrics


@dataclass
class LinkStatus:
    """Whether the last contact with upstream worked, for the staff page and metrics."""

    adapter: str
    up: bool | None = None
    last_ok_at: float | None = None
    last_error: str = ""

    def ok(self) -> None:
        self.up = True
        self.last_ok_at = time.time()
        self.last_error = ""
        metrics.UPSTREAM_UP.labels(self.adapter).set(1)

    def failed(self, error: str) -> None:
        self.up = False
        self.last_error = error
        metrics.UPSTREAM_UP.labels(self.adapter).set(0)


class UpstreamAdapter(Protocol):
    """A source of bookings."""

    link: LinkStatus

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the cache in step with upstream until ``stop`` is set."""

    def request_refresh(self) -> None:
        """Ask for an immediate refresh (a no-op for push feeds)."""
