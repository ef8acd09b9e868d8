"""The janitor: frees disk by deleting files of *delivered* objects only.

A delivered object's sealed file (codec outgoing spool) and its received copy (the
gateway's encrypted spool; the sealed path mirrors it, see
:class:`trailerlink_spool.layout.OutgoingLayout`)
are deleted once the retention has passed since delivery — or earlier, oldest delivery
first, while the disk is under pressure. Nothing that is not delivered is ever deleted.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from trailerlink_common.stopping import sleep_or_stop
from trailerlink_spool.index import SpoolIndex
from trailerlink_spool.layout import OutgoingLayout, SpoolLayout

from trailerlink_uplink import metrics
from trailerlink_uplink.queue import QueuedObject, SendQueue

log = logging.getLogger(__name__)


def disk_free_fraction(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return usage.free / usage.total if usage.total else 1.0


class Janitor:
    def __init__(
        self,
        queue: SendQueue,
        outgoing_dir: Path,
        spool_dir: Path,
        *,
        retention_seconds: float,
        pressure_free_fraction: float,
        free_fraction: Callable[[Path], float] = disk_free_fraction,
    ) -> None:
        self.queue = queue
        self._spool_index: SpoolIndex | None = None
        self.outgoing_dir = Path(outgoing_dir)
        self.outgoing = OutgoingLayout(self.outgoing_dir)
        self.spool_dir = Path(spool_dir)
        self.retention_seconds = retention_seconds
        self.pressure_free_fraction = pressure_free_fraction
        self._free_fraction = free_fraction

    def _gateway_index(self) -> SpoolIndex | None:
        """The gateway's index of received copies, told when a copy is deleted so it
        never points at a missing file; None while the gateway has not made one."""
        if self._spool_index is None:
            layout = SpoolLayout(self.spool_dir)
            if layout.index_path.exists():
                self._spool_index = SpoolIndex(layout)
        return self._spool_index

    def _under_pressure(self) -> bool:
        try:
            return self._free_fraction(self.outgoing_dir) < self.pressure_free_fraction
        except OSError:
            return False

    def _files(self, row: QueuedObject) -> list[tuple[str, Path]]:
        files = [("sealed", self.outgoing.sealed_file(row.sealed_path))]
        if self.outgoing.is_sealed(row.sealed_path):
            spool_rel = self.outgoing.spool_relative(row.sealed_path)
            files.append(("received", self.spool_dir / spool_rel))
        return files

    def _purge(self, row: QueuedObject) -> None:
        for kind, path in self._files(row):
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                size = None  # deleted by an earlier, interrupted sweep
            if size is not None:
                metrics.PURGED.labels(kind).inc()
                metrics.PURGED_BYTES.inc(size)
            if kind == "received" and (index := self._gateway_index()) is not None:
                index.mark_purged(path.relative_to(self.spool_dir).as_posix())
        self.queue.mark_purged(row.id)

    def sweep(self, now: float | None = None) -> int:
        """Delete what may go now; returns how many objects' files were deleted."""
        now = time.time() if now is None else now
        purged = 0
        for row in self.queue.delivered_unpurged(delivered_before=now - self.retention_seconds):
            self._purge(row)
            purged += 1
        if self._under_pressure():
            for row in self.queue.delivered_unpurged():
                if not self._under_pressure():
                    break
                self._purge(row)
                purged += 1
        if purged:
            log.info("janitor deleted delivered objects", extra={"objects": purged})
        return purged

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.sweep)
            except Exception as exc:
                log.warning("janitor sweep failed", extra={"error": type(exc).__name__})
            await sleep_or_stop(stop, interval)
