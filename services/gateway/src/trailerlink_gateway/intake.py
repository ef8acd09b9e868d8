"""The core of C-STORE: stream an object into the encrypted spool, make it durable,
record it with its event, and say what to answer. Knows nothing of PDUs or sockets.

Order of a store (promise 1 of DESIGN.md):

1. while the data set arrives: hash it, encrypt it into a temporary file beside its
   final name, and walk its structure (:mod:`trailerlink_gateway.scan`);
2. at its end: check it parsed and matches the request, then fsync the file, rename
   it into place and fsync the folder;
3. record it in the spool index together with its ObjectReceived in the outbox, in one
   durable SQLite transaction;
4. wake the outbox publisher (and, only if ``publish_wait_seconds`` > 0, wait for it):
   the event is already durable, so by default the answer does not wait for Kafka and
   the publication overlaps the sender's next object;
5. answer Success. Any failure before step 3 completes answers a failure status and
   leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trailerlink_common.durable import fsync_dir, remove_partials
from trailerlink_crypto.atrest import EncryptedFileWriter, SpoolKey
from trailerlink_events.messages import (
    FailureReason,
    ObjectFailed,
    ObjectIdentity,
    ObjectReceived,
    Priority,
    new_meta,
    timestamp,
)
from trailerlink_events.topics import OBJECT_FAILED, OBJECT_RECEIVED
from trailerlink_spool.index import RecordOutcome, SpoolEntry, SpoolIndex
from trailerlink_spool.layout import SpoolLayout, is_valid_uid, new_receipt_id
from trailerlink_spool.outbox import OutboxEvent, OutboxPublisher
from trailerlink_spool.part10 import file_meta_bytes

from trailerlink_gateway import metrics
from trailerlink_gateway.scan import DatasetScanner, DatasetSummary, UnparseableDataset
from trailerlink_gateway.sop_classes import KEYWORD_BY_UID, sop_class_label
from trailerlink_gateway.statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
)

log = logging.getLogger(__name__)

PRODUCER = "gateway"
# DIMSE C-STORE Priority (0000,0700)
DIMSE_PRIORITY_HIGH = 0x0001
# How often (in bytes written) a long store re-checks the free space.
_FREE_CHECK_INTERVAL = 16 * 1024 * 1024
# Fragments in flight between the receiving thread and the writer thread (bounds memory
# to this many PDUs, about 8 MiB at 128 KiB PDUs).
_PIPELINE_FRAGMENTS = 64
# The writer starts the disk write-back of what it wrote every so often, so that the
# fsync before the answer has little left to do.
_WRITEBACK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoreRequest:
    """What the modality asked to store (from the C-STORE command and its context)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    priority: int = 0


@dataclass(frozen=True)
class StoreResult:
    """What to answer: a DIMSE status, a metric outcome and, for failures, why."""

    status: int
    outcome: str
    comment: str = ""
    entry: SpoolEntry | None = None

    @property
    def success(self) -> bool:
        return self.status == SUCCESS


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) so that the new folder entries are durable."""
    if path.is_dir():
        return
    _ensure_dir(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    fsync_dir(path.parent)


class Intake:
    """Turns incoming C-STORE data sets into durable, recorded, announced spool objects."""

    def __init__(
        self,
        *,
        layout: SpoolLayout,
        index: SpoolIndex,
        key: SpoolKey,
        trailer_id: str,
        min_free_bytes: int,
        publisher: OutboxPublisher | None = None,
        publish_wait_seconds: float = 0.0,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.layout = layout
        self.index = index
        self.key = key
        self.trailer_id = trailer_id
        self.min_free_bytes = min_free_bytes
        self.publisher = publisher
        self.publish_wait_seconds = publish_wait_seconds
        self._free_bytes = free_bytes or (lambda p: shutil.disk_usage(p).free)
        _ensure_dir(layout.objects_dir)
        metrics.SPOOL_WATERMARK_BYTES.set(min_free_bytes)

    # --- start-up ----------------------------------------------------------------
    def recover(self) -> tuple[int, int]:
        """Before serving: remove temporary files and orphans of unacknowledged stores.

        Returns (temporary files removed, orphan files removed).
        """
        partials = remove_partials(self.layout.objects_dir)
        orphans = self.index.orphans()
        for path in orphans:
            path.unlink(missing_ok=True)
        if partials or orphans:
            log.info(
                "removed leftovers of unacknowledged stores",
                extra={"temporary_files": partials, "orphan_files": len(orphans)},
            )
        self.refresh_gauges()
        return partials, len(orphans)

    def free_bytes(self) -> int:
        return self._free_bytes(self.layout.root)

    def refresh_gauges(self) -> None:
        metrics.SPOOL_FREE_BYTES.set(self.free_bytes())
        metrics.SPOOL_BYTES.set(self.index.stored_bytes())
        metrics.SPOOL_OBJECTS.set(self.index.count())

    # --- a store -----------------------------------------------------------------
    def begin(self, request: StoreRequest) -> IncomingObject:
        """Start receiving one object. Never raises: a refused object still drains."""
        return IncomingObject(self, request)

    def events_for(
        self,
        outcome: RecordOutcome,
        entry: SpoolEntry,
        earlier: Sequence[SpoolEntry],
        dimse_priority: int = 0,
    ) -> list[OutboxEvent]:
        """The events announcing a recorded copy (none for a duplicate)."""
        identity = ObjectIdentity(
            study_instance_uid=entry.study_instance_uid,
            series_instance_uid=entry.series_instance_uid,
            sop_instance_uid=entry.sop_instance_uid,
            sop_class_uid=entry.sop_class_uid,
            transfer_syntax_uid=entry.transfer_syntax_uid,
        )
        received_at = timestamp(datetime.fromtimestamp(entry.received_at, UTC))
        if outcome is RecordOutcome.NEW:
            event = ObjectReceived(
                meta=new_meta(PRODUCER, self.trailer_id),
                object=identity,
                calling_ae_title=entry.calling_ae_title,
                file_size_bytes=entry.file_size,
                file_sha256=entry.file_sha256,
                dataset_size_bytes=entry.dataset_size,
                dataset_sha256=entry.dataset_sha256,
                spool_path=entry.spool_path,
                spool_key_id=entry.key_id,
                received_at=received_at,
                number_of_frames=entry.number_of_frames,
                priority=_priority(dimse_priority),
            )
            return [OutboxEvent(OBJECT_RECEIVED, entry.study_instance_uid, event)]
        if outcome is RecordOutcome.CONFLICT:
            held = ", ".join(e.receipt_id for e in earlier)
            event = ObjectFailed(
                meta=new_meta(PRODUCER, self.trailer_id),
                object=identity,
                dataset_sha256=entry.dataset_sha256,
                reason_code=FailureReason.FAILURE_REASON_UID_CONFLICT,
                reason=(
                    f"SOP Instance UID already received with different content; both "
                    f"copies kept in the spool (new receipt {entry.receipt_id}, "
                    f"earlier {held}); the new copy is not forwarded"
                ),
                stage="gateway.store",
                permanent=True,
                failed_at=timestamp(),
            )
            return [OutboxEvent(OBJECT_FAILED, entry.study_instance_uid, event)]
        return []

    def announce(self, seqs: Sequence[int]) -> bool:
        """Wake the publisher and wait (briefly) until these events are on Kafka."""
        publisher = self.publisher
        if publisher is None or not seqs:
            return False
        publisher.wake()
        if not publisher.healthy or self.publish_wait_seconds <= 0:
            return False
        if self.index.outbox.wait_published(seqs, self.publish_wait_seconds):
            return True
        publisher.mark_slow()  # don't make every store wait while Kafka is away
        return False


def _priority(dimse_priority: int) -> Priority:
    return (
        Priority.PRIORITY_URGENT
        if dimse_priority == DIMSE_PRIORITY_HIGH
        else Priority.PRIORITY_ROUTINE
    )


class _WriterThread:
    """Hashes, encrypts and writes the data set beside the association's thread (pure-
    Python PDU handling), which only receives. Two threads, each fed every fragment in
    order: one runs the two SHA-256 passes, the other AES-256-GCM and the file writes.
    hashlib, the cipher and file writes release the GIL, so all three overlap; with one
    thread doing both, the writer fell behind the receiver on every mammogram and the
    modality waited for it before its answer (docs/adr/0009)."""

    def __init__(
        self, writer: EncryptedFileWriter, dataset_sha: hashlib._Hash, file_sha: hashlib._Hash
    ) -> None:
        self._writer = writer
        self._hashes = (dataset_sha, file_sha)
        self._hash_queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_PIPELINE_FRAGMENTS)
        self._write_queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_PIPELINE_FRAGMENTS)
        self._stopped = False
        self.error: OSError | None = None
        self._threads = (
            threading.Thread(target=self._hash, name="spool-hasher", daemon=True),
            threading.Thread(target=self._write, name="spool-writer", daemon=True),
        )
        for thread in self._threads:
            thread.start()

    def put(self, data: bytes) -> None:
        self._hash_queue.put(data)
        self._write_queue.put(data)

    def stop(self) -> None:
        """Drop whatever is still queued (the store is being refused)."""
        self._stopped = True

    def close(self) -> OSError | None:
        """Wait until everything queued is hashed and written; returns the write error."""
        for q in (self._hash_queue, self._write_queue):
            q.put(None)
        for thread in self._threads:
            thread.join()
        return self.error

    def _hash(self) -> None:
        dataset_sha, file_sha = self._hashes
        while (data := self._hash_queue.get()) is not None:
            if not self._stopped:
                dataset_sha.update(data)
                file_sha.update(data)

    def _write(self) -> None:
        since_writeback = 0
        while (data := self._write_queue.get()) is not None:
            if self._stopped or self.error is not None:
                continue
            try:
                self._writer.write(data)
                since_writeback += len(data)
                if since_writeback >= _WRITEBACK_BYTES:
                    since_writeback = 0
                    self._writer.start_writeback()
            except OSError as exc:
                self.error = exc


class IncomingObject:
    """One object being received: :meth:`write` the data set bytes as they arrive,
    then :meth:`finish` (or :meth:`abandon` if the peer went away)."""

    def __init__(self, intake: Intake, request: StoreRequest) -> None:
        self._intake = intake
        self.request = request
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._received_at = datetime.now(UTC)
        self._receipt_id = new_receipt_id()
        self._refusal: StoreResult | None = None
        self._writer: EncryptedFileWriter | None = None
        self._pipeline: _WriterThread | None = None
        self._path: Path | None = None
        self._closed = False
        self._dataset_size = 0
        self._since_free_check = 0
        self._dataset_sha = hashlib.sha256()
        self._file_sha = hashlib.sha256()
        self._scanner = DatasetScanner(request.transfer_syntax_uid)
        self._open()

    # --- receiving ---------------------------------------------------------------
    def _open(self) -> None:
        req, intake = self.request, self._intake
        if req.sop_class_uid not in KEYWORD_BY_UID:
            self._refuse(
                SOP_CLASS_NOT_SUPPORTED, "sop_class_not_supported", "SOP class not supported"
            )
            return
        if not (is_valid_uid(req.sop_instance_uid) and is_valid_uid(req.sop_class_uid)):
            self._refuse(
                CANNOT_UNDERSTAND, "invalid_uid", "Affected SOP Instance UID is not a valid UID"
            )
            return
        free = intake.free_bytes()
        metrics.SPOOL_FREE_BYTES.set(free)
        if free < intake.min_free_bytes:
            self._refuse(
                OUT_OF_RESOURCES, "out_of_resources", "spool disk below its free-space watermark"
            )
            return
        try:
            self._path = intake.layout.object_path(
                req.sop_instance_uid, self._receipt_id, self._received_at
            )
            _ensure_dir(self._path.parent)
            self._writer = EncryptedFileWriter(self._path, intake.key)
            self._writer.__enter__()
            meta = file_meta_bytes(
                req.sop_class_uid,
                req.sop_instance_uid,
                req.transfer_syntax_uid,
                req.calling_ae_title,
            )
            self._file_sha.update(meta)
            self._writer.write(meta)
            self._file_size = len(meta)
            self._pipeline = _WriterThread(self._writer, self._dataset_sha, self._file_sha)
        except OSError as exc:
            self._writer = None
            self._refuse(
                OUT_OF_RESOURCES, "out_of_resources", f"spool not writable ({type(exc).__name__})"
            )

    def write(self, data: bytes | memoryview) -> None:
        """Take the next piece of the data set as received."""
        with self._lock:
            if self._closed or self._refusal is not None:
                return
            data = bytes(data)
            self._dataset_size += len(data)
            self._scanner.feed(data)
            if self._scanner.error:
                # Keep draining the association, but stop spending disk on it.
                self._refuse(
                    CANNOT_UNDERSTAND,
                    "unparseable",
                    f"data set does not parse: {self._scanner.error}",
                )
                return
            pipeline = self._pipeline
            assert pipeline is not None
            if pipeline.error is not None:
                self._refuse(
                    OUT_OF_RESOURCES,
                    "out_of_resources",
                    f"spool write failed ({type(pipeline.error).__name__})",
                )
                return
            pipeline.put(data)
            self._since_free_check += len(data)
            if self._since_free_check >= _FREE_CHECK_INTERVAL:
                self._since_free_check = 0
                # A huge object may not push the disk far below the watermark either.
                if self._intake.free_bytes() < self._intake.min_free_bytes // 2:
                    self._refuse(
                        OUT_OF_RESOURCES,
                        "out_of_resources",
                        "spool disk filled up during the store",
                    )

    def _refuse(self, status: int, outcome: str, comment: str) -> None:
        self._refusal = StoreResult(status, outcome, comment)
        self._discard()

    def _discard(self) -> None:
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            pipeline.stop()
            pipeline.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.__exit__(RuntimeError, RuntimeError("discarded"), None)
            except OSError:
                pass

    def abandon(self) -> None:
        """The association ended before the data set did: keep nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._discard()
        metrics.STORE_OUTCOMES.labels("abandoned").inc()

    # --- finishing ---------------------------------------------------------------
    def finish(self) -> StoreResult:
        """Complete the store; returns the answer. Success means durable and recorded."""
        with self._lock:
            if self._closed:
                return StoreResult(CANNOT_UNDERSTAND, "abandoned", "store was abandoned")
            self._closed = True
            result = self._finish()
        elapsed = time.monotonic() - self._started
        metrics.STORE_SECONDS.labels(result.outcome).observe(elapsed)
        metrics.STORE_OUTCOMES.labels(result.outcome).inc()
        if not result.success:
            metrics.REJECTS.labels(result.outcome).inc()
        log.info(
            "store answered",
            extra={
                "outcome": result.outcome,
                "status": f"0x{result.status:04X}",
                "sop_instance_uid": self.request.sop_instance_uid,
                "sop_class": sop_class_label(self.request.sop_class_uid),
                "calling_ae": self.request.calling_ae_title,
                "bytes": self._dataset_size,
                "seconds": round(elapsed, 3),
                **({"reason": result.comment} if result.comment else {}),
            },
        )
        return result

    def _finish(self) -> StoreResult:
        if self._refusal is not None:
            return self._refusal
        try:
            summary = self._scanner.finish()
        except UnparseableDataset as exc:
            self._discard()
            return StoreResult(CANNOT_UNDERSTAND, "unparseable", f"data set does not parse: {exc}")
        mismatch = self._check(summary)
        if mismatch is not None:
            self._discard()
            return mismatch
        assert self._pipeline is not None
        error = self._pipeline.close()
        self._pipeline = None
        if error is not None:
            self._discard()
            return StoreResult(
                OUT_OF_RESOURCES, "out_of_resources", f"spool write failed ({type(error).__name__})"
            )
        writer, path = self._writer, self._path
        assert writer is not None and path is not None
        self._writer = None
        try:
            writer.__exit__(None, None, None)  # fsync file, rename, fsync folder
        except OSError as exc:
            return StoreResult(
                OUT_OF_RESOURCES, "out_of_resources", f"spool write failed ({type(exc).__name__})"
            )
        return self._record(summary, path, writer.stored_size)

    def _check(self, summary: DatasetSummary) -> StoreResult | None:
        req = self.request
        if summary.sop_instance_uid != req.sop_instance_uid:
            return StoreResult(
                CANNOT_UNDERSTAND,
                "uid_mismatch",
                "SOP Instance UID of the data set differs from the request",
            )
        if summary.sop_class_uid != req.sop_class_uid:
            return StoreResult(
                DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "sop_class_mismatch",
                "SOP Class UID of the data set differs from the request",
            )
        if not (
            is_valid_uid(summary.study_instance_uid) and is_valid_uid(summary.series_instance_uid)
        ):
            return StoreResult(
                CANNOT_UNDERSTAND, "invalid_uid", "Study or Series Instance UID is not a valid UID"
            )
        return None

    def _record(self, summary: DatasetSummary, path: Path, stored_size: int) -> StoreResult:
        intake, req = self._intake, self.request
        meta_size = self._file_size
        entry = SpoolEntry(
            receipt_id=self._receipt_id,
            sop_instance_uid=summary.sop_instance_uid,
            sop_class_uid=summary.sop_class_uid,
            study_instance_uid=summary.study_instance_uid,
            series_instance_uid=summary.series_instance_uid,
            transfer_syntax_uid=req.transfer_syntax_uid,
            calling_ae_title=req.calling_ae_title,
            file_size=meta_size + self._dataset_size,
            file_sha256=self._file_sha.hexdigest(),
            dataset_size=self._dataset_size,
            dataset_sha256=self._dataset_sha.hexdigest(),
            stored_size=stored_size,
            spool_path=intake.layout.relative(path),
            key_id=intake.key.key_id,
            received_at=time.time(),
            number_of_frames=summary.number_of_frames,
        )
        try:
            recorded = intake.index.record(
                entry,
                lambda outcome, new, earlier: intake.events_for(
                    outcome, new, earlier, req.priority
                ),
            )
        except (sqlite3.Error, OSError) as exc:
            path.unlink(missing_ok=True)
            return StoreResult(
                OUT_OF_RESOURCES,
                "out_of_resources",
                f"spool index not writable ({type(exc).__name__})",
            )
        if recorded.outcome is RecordOutcome.DUPLICATE:
            # Not recorded, so an unlink lost in a crash leaves only an orphan that
            # start-up recovery removes.
            path.unlink(missing_ok=True)
            return StoreResult(SUCCESS, "duplicate", entry=recorded.entry)
        label = sop_class_label(entry.sop_class_uid)
        metrics.OBJECTS_RECEIVED.labels(label).inc()
        metrics.BYTES_RECEIVED.labels(label).inc(entry.dataset_size)
        metrics.SPOOL_BYTES.inc(stored_size)
        metrics.SPOOL_OBJECTS.inc()
        if recorded.outcome is RecordOutcome.CONFLICT:
            metrics.UID_CONFLICTS.inc()
            log.error(
                "SOP Instance UID conflict: same UID, different content; both kept",
                extra={"sop_instance_uid": entry.sop_instance_uid, "receipt_id": entry.receipt_id},
            )
        intake.announce(recorded.outbox_seqs)
        outcome = "conflict" if recorded.outcome is RecordOutcome.CONFLICT else "stored"
        return StoreResult(SUCCESS, outcome, entry=recorded.entry)
