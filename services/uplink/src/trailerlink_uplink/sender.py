"""The sender: takes objects from the queue in order and uploads each with tus, resuming
after any failure from the server's offset, never from zero.

Per object: create the upload (its URL durably in the queue *before* the first byte),
then PATCH chunk by chunk; after a failure, HEAD for the server's offset and go on from
there, so at most the chunk in flight is sent again. A restart (even kill -9) finds the
URL in the queue and resumes the same upload.

Keeping the link busy: while a worker sends the last chunk of an object it already takes
the next object in queue order and creates its upload, so the create round trip overlaps
the last chunk instead of leaving the link idle between objects.

One upload never holds up the others: a refusal about that upload alone (423 locked, 408
body timed out: the ingest is still clearing the connection a silent link loss left
behind) sets the object aside for a bounded, growing while and the worker goes on with
the next object in queue order.

A sealed file that is missing, unreadable or does not match its event is never retried
silently: ObjectFailed (with the reason) goes to the trailer broker, the object leaves the
send queue (state ``failed``; support can queue it again) and
``trailerlink_uplink_sealed_file_failures_total{kind}`` counts it. An upload the ingest
refuses for good (its problem+json says ``permanent``: a key it no longer holds, metadata
it will never accept, too large) goes the same way, counted in
``trailerlink_uplink_objects_refused_total{reason}``: retried, it would hold the head of
the queue for ever while the next woman's images wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_common.tracing import attached, stored_context
from trailerlink_events.messages import FailureReason, ObjectFailed, new_meta, timestamp
from trailerlink_events.topics import OBJECT_FAILED
from trailerlink_events.wire import UploadMetadata
from trailerlink_spool.layout import OutgoingLayout

from trailerlink_uplink import metrics
from trailerlink_uplink.link import Backoff, LinkError, LinkMonitor
from trailerlink_uplink.queue import QueuedObject, SendQueue
from trailerlink_uplink.receipts import object_identity
from trailerlink_uplink.tus import OffsetConflict, TusClient, UploadGone, UploadRefused

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.uplink")

IDLE_POLL_SECONDS = 5.0
PER_UPLOAD_REFUSALS = frozenset({400, 408, 413, 423})
"""Statuses about one upload, not the link or the server: set that object aside. (400
and 413 from an ingest that does not say whether a refusal is permanent: the object rests
and younger work goes first instead of the whole trailer backing off.)"""
FAILED_STAGE = "uplink.sealed-file"
REFUSED_STAGE = "uplink.refused"
_EVENT_NAMESPACE = uuid.UUID("0b8f3c1e-5d2a-4e7b-9a61-7c4d2e8f1a35")


class SealedFileProblem(Exception):
    """The sealed file cannot be sent: ``kind`` is ``missing``, ``unreadable`` (an
    OS error reading it) or ``corrupt`` (size or SHA-256 differs from its event). The
    message names no patient data (no paths: they carry UIDs only, but stay out anyway)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Ahead:
    """The next object a worker took while finishing the current one, and the task
    creating its upload (the URL, or None when the upload proper must do it)."""

    obj: QueuedObject
    created: asyncio.Task[str | None]


def upload_metadata(obj: QueuedObject) -> dict[str, str]:
    """The object identity the ingest needs before it has the bytes: exactly the keys the
    ingest accepts (it refuses unknown keys), in the wire contract's order, empty values
    left out. UIDs, hashes and sizes; no patient data."""
    meta = UploadMetadata(
        sop_instance_uid=obj.sop_instance_uid,
        study_instance_uid=obj.study_instance_uid,
        dataset_sha256=obj.dataset_sha256,
        sealed_size=obj.sealed_size,
        key_id=obj.key_id,
        series_instance_uid=obj.series_instance_uid,
        sop_class_uid=obj.sop_class_uid,
        transfer_syntax_uid=obj.transfer_syntax_uid,
        file_sha256=obj.file_sha256,
    )
    return {k: v for k, v in meta.pairs().items() if v}


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

    def __init__(
        self,
        queue: SendQueue,
        tus: TusClient,
        link: LinkMonitor,
        outgoing_dir: Path,
        *,
        trailer_id: str,
        chunk_size: int,
        concurrency: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.queue = queue
        self.tus = tus
        self.link = link
        self.outgoing_dir = Path(outgoing_dir)
        self.outgoing = OutgoingLayout(self.outgoing_dir)
        self.trailer_id = trailer_id
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.goodput = GoodputMeter()
        self.publisher: Any = None
        """Where ObjectFailed goes (an EventProducer); None: only the queue records it."""
        self._in_flight: set[int] = set()
        self._wake = asyncio.Event()
        self._sent_mark: dict[int, int] = {}
        self._verified: set[int] = set()
        self._discovery: asyncio.Task[object] | None = None
        self._set_aside: dict[int, float] = {}  # object id -> monotonic time it may go again
        self._refusals: dict[int, Backoff] = {}
        self._refused_ahead: dict[int, UploadRefused] = {}  # found by a look-ahead create

    def wake(self) -> None:
        """Something was queued: idle workers look again now."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Service task: run the workers until ``stop``."""
        workers = [
            asyncio.create_task(self._worker(stop), name=f"upload-{i}")
            for i in range(self.concurrency)
        ]
        try:
            await stop.wait()
        finally:
            self._wake.set()
            _, pending = await asyncio.wait(workers, timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    def _resting(self) -> set[int]:
        """Objects set aside after a per-upload refusal whose time has not come yet."""
        now = time.monotonic()
        for object_id in [i for i, until in self._set_aside.items() if until <= now]:
            del self._set_aside[object_id]
        return set(self._set_aside)

    def _take(self) -> QueuedObject | None:
        """The next object in queue order, marked in flight (no await in between, so two
        workers never take the same one); objects set aside are skipped meanwhile."""
        obj = self.queue.next_object(exclude=self._in_flight | self._resting())
        if obj is not None:
            self._in_flight.add(obj.id)
        return obj

    def _idle_wait(self) -> float:
        """How long an idle worker waits before looking again: until the first object
        set aside may go again, at most IDLE_POLL_SECONDS."""
        if not self._set_aside:
            return IDLE_POLL_SECONDS
        return max(0.05, min(IDLE_POLL_SECONDS, min(self._set_aside.values()) - time.monotonic()))

    def _set_object_aside(self, obj: QueuedObject, exc: LinkError) -> float:
        backoff = self._refusals.setdefault(obj.id, Backoff(self.backoff_initial, self.backoff_max))
        delay = min(self.backoff_max, max(exc.retry_after or 0.0, backoff.next_delay()))
        self._set_aside[obj.id] = time.monotonic() + delay
        self._wake.set()  # another worker may be idle while this object rests
        return delay

    async def _worker(self, stop: asyncio.Event) -> None:
        ahead: list[_Ahead] = []
        while not stop.is_set():
            fresh_url = None
            if ahead:
                taken = ahead.pop()
                obj = taken.obj
                fresh_url = await taken.created
            else:
                found = self._take()
                if found is None:
                    self._wake.clear()
                    waiters = [
                        asyncio.ensure_future(stop.wait()),
                        asyncio.ensure_future(self._wake.wait()),
                    ]
                    await asyncio.wait(
                        waiters, timeout=self._idle_wait(), return_when=asyncio.FIRST_COMPLETED
                    )
                    for w in waiters:
                        w.cancel()
                    continue
                obj = found
            try:
                await self.send(obj, stop, fresh_url=fresh_url, ahead=ahead)
            except Exception as exc:  # a bug must not silently end a worker
                log.exception(
                    "upload worker error; going on",
                    extra={"object_id": obj.id, "error": type(exc).__name__},
                )
                await self.link.wait_after_failure(self.backoff_max, stop)
            finally:
                self._in_flight.discard(obj.id)
        for taken in ahead:  # stopping: leave it queued for the next start
            taken.created.cancel()
            self._in_flight.discard(taken.obj.id)

    async def _create_ahead(self, obj: QueuedObject) -> str | None:
        """Create the upload of the object a worker will send next, while its current
        last chunk is still on the way. Any trouble is left to the upload proper."""
        if obj.upload_url:
            return None  # a resumed upload: the upload proper HEADs it
        try:
            await self._ensure_verified(obj)
            url = await self.tus.create(obj.sealed_size, upload_metadata(obj), obj.received_at)
            await asyncio.to_thread(self.queue.set_upload_url, obj.id, url)
        except UploadRefused as exc:
            self._refused_ahead[obj.id] = exc  # the ingest answered for good: ask once
            return None
        except (LinkError, SealedFileProblem, UploadGone, OffsetConflict):
            return None  # the upload proper meets the same trouble and deals with it
        metrics.UPLOADS.labels("created").inc()
        return url

    async def send(
        self,
        obj: QueuedObject,
        stop: asyncio.Event,
        *,
        fresh_url: str | None = None,
        ahead: list[_Ahead] | None = None,
    ) -> bool:
        """:meth:`_send` in the image's trace (the context its queue row kept)."""
        with tracer.start_as_current_span(
            "uplink.upload",
            context=stored_context(obj.traceparent),
            kind=SpanKind.CLIENT,
            attributes={
                "dicom.sop_instance_uid": obj.sop_instance_uid,
                "trailerlink.object_id": obj.id,
                "trailerlink.sealed_bytes": obj.sealed_size,
            },
        ) as span:
            done = await self._send(obj, stop, fresh_url=fresh_url, ahead=ahead)
            span.set_attribute("trailerlink.uploaded", done)
            return done

    async def _send(
        self,
        obj: QueuedObject,
        stop: asyncio.Event,
        *,
        fresh_url: str | None = None,
        ahead: list[_Ahead] | None = None,
    ) -> bool:
        """Upload ``obj`` until it is complete (True), or False when ``stop`` is set, its
        sealed file cannot be sent, or the ingest refused this upload for now (it is set
        aside: the worker goes on with other objects). Link trouble is retried without
        limit: an object is never given up for the link. ``fresh_url``: an upload just
        created for it (offset 0); ``ahead``: where to put the next object, taken while
        the last chunk goes."""
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        started = time.monotonic()
        while not stop.is_set():
            try:
                if (refused := self._refused_ahead.pop(obj.id, None)) is not None:
                    raise refused
                await self._upload_once(obj, fresh_url, ahead)
            except LinkError as exc:
                metrics.CHUNK_RETRIES.labels(exc.kind).inc()
                upload_id = self._upload_id(obj)
                if exc.status is not None:
                    metrics.HTTP_REFUSALS.labels(str(exc.status)).inc()
                if exc.status in PER_UPLOAD_REFUSALS:
                    # The server answered (the link is fine) about this upload alone:
                    # let the next objects go first, come back to this one shortly.
                    delay = self._set_object_aside(obj, exc)
                    log.warning(
                        "upload refused for now; other objects go first",
                        extra={
                            "status": exc.status,
                            "upload_id": upload_id,
                            "object_id": obj.id,
                            "retry_in_s": round(delay, 2),
                        },
                    )
                    return False
                self.link.report_failure(exc)
                delay = backoff.next_delay()
                log.warning(
                    "upload interrupted; will resume",
                    extra={
                        "kind": exc.kind,
                        "status": exc.status,
                        "upload_id": upload_id,
                        "object_id": obj.id,
                        "retry_in_s": round(delay, 2),
                    },
                )
                await self.link.wait_after_failure(delay, stop)
                continue
            except UploadGone as exc:
                log.warning(
                    "server forgot the upload; starting a new one",
                    extra={"object_id": obj.id, "why": str(exc)},
                )
                metrics.UPLOADS.labels("recreated").inc()
                self.queue.set_upload_url(obj.id, None)
                self._sent_mark.pop(obj.id, None)
                obj = self.queue.get(obj.id) or obj
                continue
            except OffsetConflict:
                continue  # HEAD again on the next round
            except (SealedFileProblem, UploadRefused) as exc:
                await self._give_up(obj, exc, stop)
                return False
            finally:
                fresh_url = None  # after any failure: HEAD for the server's offset
            self.link.report_success()
            self._refusals.pop(obj.id, None)
            metrics.UPLOADS.labels("completed").inc()
            metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
            self._sent_mark.pop(obj.id, None)
            return True
        return False

    def _upload_id(self, obj: QueuedObject) -> str | None:
        """The ingest's id of the object's upload (the last segment of its URL), for
        logs: support matches it with the ingest's log lines."""
        current = self.queue.get(obj.id)
        url = current.upload_url if current else obj.upload_url
        return url.rstrip("/").rsplit("/", 1)[-1] if url else None

    def _path(self, obj: QueuedObject) -> Path:
        return self.outgoing.sealed_file(obj.sealed_path)

    def _check_file(self, obj: QueuedObject) -> None:
        """Raise SealedFileProblem unless the file is there, readable and the one its
        event describes (size and SHA-256)."""
        path = self._path(obj)
        try:
            size = path.stat().st_size
            if size != obj.sealed_size:
                raise SealedFileProblem("corrupt", "sealed file size differs from its event")
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        except FileNotFoundError:
            raise SealedFileProblem("missing", "sealed file missing") from None
        except OSError as exc:
            raise SealedFileProblem(
                "unreadable", f"sealed file unreadable ({type(exc).__name__})"
            ) from None
        if obj.sealed_sha256 and digest.hexdigest() != obj.sealed_sha256:
            raise SealedFileProblem("corrupt", "sealed file SHA-256 differs from its event")

    async def _ensure_verified(self, obj: QueuedObject) -> None:
        """Check the file once per process: before its upload is created, and before a
        resume after a restart (the file may have been damaged meanwhile)."""
        if obj.id not in self._verified:
            await asyncio.to_thread(self._check_file, obj)
            self._verified.add(obj.id)

    async def _give_up(
        self, obj: QueuedObject, problem: SealedFileProblem | UploadRefused, stop: asyncio.Event
    ) -> None:
        """Take an unsendable object out of the queue, loudly: log (object id and reason,
        no patient data), count, publish ObjectFailed, then mark it failed. The event goes
        first so a crash in between repeats it (same event id) rather than losing it."""
        if isinstance(problem, UploadRefused):
            kind, stage, why = (
                problem.reason,
                REFUSED_STAGE,
                f"ingest refused the upload for good ({problem.reason}: {problem})",
            )
            code = (
                "FAILURE_REASON_UNSEALABLE"
                if problem.reason == "unknown_key"
                else "FAILURE_REASON_UNSPECIFIED"
            )
            log.error(
                "upload refused for good by the ingest; taken out of the send queue",
                extra={
                    "object_id": obj.id,
                    "reason": problem.reason,
                    "status": problem.status,
                    "why": str(problem),
                    "key_id": obj.key_id,
                },
            )
        else:
            kind, stage, why = problem.kind, FAILED_STAGE, str(problem)
            code = "FAILURE_REASON_UNSPECIFIED"
            log.error(
                "sealed object cannot be sent; taken out of the send queue",
                extra={"object_id": obj.id, "kind": problem.kind, "why": why},
            )
        current = self.queue.get(obj.id) or obj
        if current.upload_url:  # free the server's partial upload; a resend starts afresh
            with contextlib.suppress(LinkError, UploadGone):
                await self.tus.terminate(current.upload_url)
        if self.publisher is not None:
            event_id = uuid.uuid5(
                _EVENT_NAMESPACE, f"{obj.sealed_path}:{kind}:{current.failure or ''}"
            )
            event = ObjectFailed(
                meta=new_meta("uplink", self.trailer_id, event_id=str(event_id)),
                object=object_identity(obj),
                dataset_sha256=obj.dataset_sha256,
                reason_code=FailureReason.Value(code),
                reason=why,
                stage=stage,
                permanent=True,
                failed_at=timestamp(),
            )
            backoff = Backoff(self.backoff_initial, self.backoff_max)
            while True:
                try:
                    await self.publisher.publish(OBJECT_FAILED, obj.study_instance_uid, event)
                    break
                except Exception as exc:  # broker not there yet: the object waits for it
                    log.warning(
                        "object-failed not published yet; will retry",
                        extra={"object_id": obj.id, "error": type(exc).__name__},
                    )
                    if await sleep_or_stop(stop, backoff.next_delay()):
                        return  # still queued: found again at the next start
        await asyncio.to_thread(self.queue.mark_failed, obj.id, f"uplink: {why}")
        if isinstance(problem, UploadRefused):
            metrics.REFUSED_OBJECTS.labels(kind).inc()
        else:
            metrics.SEALED_FILE_FAILURES.labels(kind).inc()
        self._refusals.pop(obj.id, None)
        self._verified.discard(obj.id)
        self._sent_mark.pop(obj.id, None)

    def _look_ahead(self, ahead: list[_Ahead] | None) -> None:
        if ahead is None or ahead:
            return
        nxt = self._take()
        if nxt is not None:
            with attached(nxt.traceparent):  # its creation is in its own trace, not this one
                ahead.append(_Ahead(nxt, asyncio.create_task(self._create_ahead(nxt))))

    async def _discover(self) -> None:
        """What the server supports (the checksum extension), learnt once by a task all
        workers share, so that round trip overlaps the first create instead of
        preceding it."""
        if self.tus.capabilities is None:
            if self._discovery is None or self._discovery.done():  # none yet, or it failed
                self._discovery = asyncio.create_task(self.tus.discover())
            await asyncio.shield(self._discovery)

    async def _upload_once(
        self, obj: QueuedObject, fresh_url: str | None = None, ahead: list[_Ahead] | None = None
    ) -> None:
        discovering = asyncio.ensure_future(self._discover())
        try:
            await self._upload_from(obj, fresh_url, ahead, discovering)
        finally:
            if not discovering.done():
                discovering.cancel()
            elif not discovering.cancelled():
                discovering.exception()  # raised by the await below if it mattered

    async def _upload_from(
        self,
        obj: QueuedObject,
        fresh_url: str | None,
        ahead: list[_Ahead] | None,
        discovering: asyncio.Future[None],
    ) -> None:
        url: str | None
        if fresh_url is not None:
            url, offset = fresh_url, 0  # created ahead a moment ago: nothing to HEAD
        else:
            current = await asyncio.to_thread(self.queue.get, obj.id)
            url = current.upload_url if current else obj.upload_url
            await self._ensure_verified(obj)
            if url is None:
                url = await self.tus.create(obj.sealed_size, upload_metadata(obj), obj.received_at)
                # durable before the first byte
                await asyncio.to_thread(self.queue.set_upload_url, obj.id, url)
                metrics.UPLOADS.labels("created").inc()
                offset = 0
            else:
                offset = await self.tus.offset(url)
                metrics.UPLOADS.labels("resumed").inc()
        await discovering  # the first PATCH needs to know whether to send checksums
        self.link.report_success()
        if offset < obj.sealed_size:
            try:
                fd = os.open(self._path(obj), os.O_RDONLY)
            except FileNotFoundError:
                raise SealedFileProblem("missing", "sealed file missing") from None
            except OSError as exc:
                raise SealedFileProblem(
                    "unreadable", f"sealed file unreadable ({type(exc).__name__})"
                ) from None
            try:
                while offset < obj.sealed_size:
                    if offset + self.chunk_size >= obj.sealed_size:
                        self._look_ahead(ahead)  # the last chunk: line up the next object
                    offset = await self._send_chunk(obj, url, fd, offset)
            finally:
                os.close(fd)
        await asyncio.to_thread(self.queue.mark_uploaded, obj.id)
        self._verified.discard(obj.id)

    async def _send_chunk(self, obj: QueuedObject, url: str, fd: int, offset: int) -> int:
        length = min(self.chunk_size, obj.sealed_size - offset)
        try:
            data = os.pread(fd, length, offset)
        except OSError as exc:
            raise SealedFileProblem(
                "unreadable", f"sealed file unreadable ({type(exc).__name__})"
            ) from None
        if len(data) != length:
            raise SealedFileProblem("corrupt", "sealed file shorter than its event says")
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
