"""The sender: takes objects from the queue in order and uploads each with tus, resuming
after any failure from the server's offset, never from zero.

Per object: create the upload (its URL durably in the queue *before* the first byte),
then PATCH chunk by chunk; after a failure, HEAD for the server's offset and go on from
there, so at most the chunk in flight is sent again. A restart (even kill -9) finds the
URL in the queue and resumes the same upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from pathlib import Path

from trailerlink_uplink import metrics
from trailerlink_uplink.link import Backoff, LinkError, LinkMonitor
from trailerlink_uplink.queue import QueuedObject, SendQueue
from trailerlink_uplink.tus import OffsetConflict, TusClient, UploadGone

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 5.0


class SealedFileProblem(Exception):
    """The sealed file is missing or does not match its event: it cannot be sent."""


def upload_metadata(obj: QueuedObject) -> dict[str, str]:
    """The object identity the ingest needs before it has the bytes: exactly the keys the
    ingest accepts (it refuses unknown keys). UIDs, hashes and sizes; no patient data."""
    meta = {
        "sop_instance_uid": obj.sop_instance_uid,
        "study_instance_uid": obj.study_instance_uid,
        "dataset_sha256": obj.dataset_sha256,
        "sealed_size": str(obj.sealed_size),
        "key_id": obj.key_id,
        "series_instance_uid": obj.series_instance_uid,
        "sop_class_uid": obj.sop_class_uid,
        "transfer_syntax_uid": obj.transfer_syntax_uid,
        "file_sha256": obj.file_sha256,
    }
    return {k: v for k, v in meta.items() if v}


class GoodputMeter:
    """Acknowledged bytes per second over a sliding window."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self._samples: deque[tuple[float, int]] = deque()
        self._started = time.monotonic()

    def add(self, nbytes: int) -> None:
        self._samples.append((time.monotonic(), nbytes))

    def rate(self) -> float:
        now = time.monotonic()
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()
        span = min(self.window, now - self._started)
        return sum(n for _, n in self._samples) / span if span > 0 else 0.0


class Sender:
    """Upload workers (``concurrency`` at once) over one shared link and bandwidth cap."""

    def __init__(self, queue: SendQueue, tus: TusClient, link: LinkMonitor, outgoing_dir: Path,
                 *, trailer_id: str, chunk_size: int, concurrency: int,
                 backoff_initial: float, backoff_max: float) -> None:
        self.queue = queue
        self.tus = tus
        self.link = link
        self.outgoing_dir = Path(outgoing_dir)
        self.trailer_id = trailer_id
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.goodput = GoodputMeter()
        self._in_flight: set[int] = set()
        self._wake = asyncio.Event()
        self._sent_mark: dict[int, int] = {}

    def wake(self) -> None:
        """Something was queued: idle workers look again now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Service task: run the workers until ``stop``."""
        workers = [asyncio.create_task(self._worker(stop), name=f"upload-{i}")
                   for i in range(self.concurrency)]
        try:
            await stop.wait()
        finally:
            self._wake.set()
            _, pending = await asyncio.wait(workers, timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            obj = self.queue.next_object(exclude=self._in_flight)
            if obj is None:
                self._wake.clear()
                waiters = [asyncio.ensure_future(stop.wait()),
                           asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waiters, timeout=IDLE_POLL_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                continue
            self._in_flight.add(obj.id)
            try:
                await self.send(obj, stop)
            finally:
                self._in_flight.discard(obj.id)

    async def send(self, obj: QueuedObject, stop: asyncio.Event) -> bool:
        """Upload ``obj`` until it is complete (True) or ``stop`` is set (False). Link
        trouble is retried without limit: an object is never given up for the link."""
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        started = time.monotonic()
        while not stop.is_set():
            try:
                await self._upload_once(obj)
            except LinkError as exc:
                metrics.CHUNK_RETRIES.labels(exc.kind).inc()
                self.link.report_failure(exc)
                delay = backoff.next_delay()
                log.warning("upload interrupted; will resume",
                            extra={"kind": exc.kind, "object_id": obj.id,
                                   "retry_in_s": round(delay, 2)})
                await self.link.wait_after_failure(delay, stop)
                continue
            except UploadGone as exc:
                log.warning("server forgot the upload; starting a new one",
                            extra={"object_id": obj.id, "why": str(exc)})
                metrics.UPLOADS.labels("recreated").inc()
                self.queue.set_upload_url(obj.id, None)
                self._sent_mark.pop(obj.id, None)
                obj = self.queue.get(obj.id) or obj
                continue
            except OffsetConflict:
                continue  # HEAD again on the next round
            except SealedFileProblem as exc:
                log.error("sealed object cannot be sent", extra={"object_id": obj.id,
                                                               "why": str(exc)})
                self.queue.mark_failed(obj.id, f"uplink: {exc}")
                return False
            self.link.report_success()
            metrics.UPLOADS.labels("completed").inc()
            metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
            self._sent_mark.pop(obj.id, None)
            return True
        return False

    def _path(self, obj: QueuedObject) -> Path:
        return self.outgoing_dir / obj.sealed_path

    def _check_file(self, obj: QueuedObject) -> None:
        path = self._path(obj)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SealedFileProblem("sealed file missing") from None
        if size != obj.sealed_size:
            raise SealedFileProblem("sealed file size differs from its event")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if obj.sealed_sha256 and digest.hexdigest() != obj.sealed_sha256:
            raise SealedFileProblem("sealed file SHA-256 differs from its event")

    async def _upload_once(self, obj: QueuedObject) -> None:
        if self.tus.capabilities is None:
            await self.tus.discover()
        current = self.queue.get(obj.id)
        url = current.upload_url if current else obj.upload_url
        if url is None:
            await asyncio.to_thread(self._check_file, obj)
            url = await self.tus.create(obj.sealed_size, upload_metadata(obj))
            self.queue.set_upload_url(obj.id, url)  # durable before the first byte
            metrics.UPLOADS.labels("created").inc()
            offset = 0
        else:
            offset = await self.tus.offset(url)
            metrics.UPLOADS.labels("resumed").inc()
        self.link.report_success()
        if offset < obj.sealed_size:
            fd = os.open(self._path(obj), os.O_RDONLY)
            try:
                while offset < obj.sealed_size:
                    offset = await self._send_chunk(obj, url, fd, offset)
            finally:
                os.close(fd)
        self.queue.mark_uploaded(obj.id)

    async def _send_chunk(self, obj: QueuedObject, url: str, fd: int, offset: int) -> int:
        length = min(self.chunk_size, obj.sealed_size - offset)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise SealedFileProblem("sealed file shorter than its event says")
        mark = self._sent_mark.get(obj.id, offset)
        resent = max(0, min(mark, offset + length) - offset)
        if resent:
            metrics.RESENT_BYTES.inc(resent)
        try:
            result = await self.tus.patch(url, offset, data)
        except LinkError as exc:
            self._sent_mark[obj.id] = max(mark, offset + getattr(exc, "sent", 0))
            raise
        self._sent_mark[obj.id] = max(mark, offset + result.sent)
        if result.offset <= offset or result.offset > obj.sealed_size:
            raise OffsetConflict()
        acked = result.offset - offset
        metrics.ACKED_BYTES.inc(acked)
        self.goodput.add(acked)
        self.link.report_success()
        return result.offset
