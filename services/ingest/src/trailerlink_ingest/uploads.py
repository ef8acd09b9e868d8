"""Durable upload state on shared storage: one directory per upload.

Layout under ``storage_dir``::

    uploads/<trailer id>/<upload id>/info.json   state (atomically replaced, fsynced)
    uploads/<trailer id>/<upload id>/data        the sealed bytes received so far
    uploads/<trailer id>/<upload id>/lock        flock'd while a request writes
    uploads/<trailer id>/<upload id>/takeover    a waiting request asks the writer to yield
    uploads/<trailer id>/.create.lock            flock'd while one of its uploads is created
    uploads/<trailer id>/.expired-<upload id>/   an expired upload on its way out

``info.json``'s ``offset`` is the only truth about how much is received: it is written
(and fsynced, with its directory) only after the data bytes up to it were fsynced, so
every offset a client was ever told survives a crash. Bytes past it in ``data`` are
leftovers of an unfinished request and are overwritten by the next PATCH.

Every replica mounts the same ``storage_dir`` (a ReadWriteMany volume), so an upload may
continue on any replica; the ``flock`` keeps two requests from writing one upload, and
the trailer's ``.create.lock`` makes "count its unfinished uploads, then create one" a
single step across replicas (the per-trailer cap).

The lock cannot outlive a dead client: the writer ends its request when the body brings
no bytes for a while (the body-read deadline in :mod:`tus`), and a request that finds the
upload locked leaves a ``takeover`` file, on which a writer that has been idle for a
moment yields at once. A client that lost its link and resumed on a new connection so
gets its upload back in about a second, on any replica, whatever state the old
connection was left in.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from trailerlink_common.durable import fsync_dir, write_durably

from trailerlink_ingest.metadata import UploadMetadata

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
TRAILER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LOCK_WAIT_SECONDS = 10.0
CREATE_LOCK = ".create.lock"  # not an upload id: trailer_uploads() never lists it
TOMBSTONE_PREFIX = ".expired-"  # likewise
_LOCK_POLL_SECONDS = 0.01


class StorageFull(OSError):
    """The shared uploads volume has no room for this (ENOSPC or EDQUOT, or less free
    space than a new upload's length). Nothing durable changed: the upload's offset
    stands (or no upload was created); the client retries later."""


def is_storage_full(exc: OSError) -> bool:
    """Whether ``exc`` says the file system (or the volume's quota) is full."""
    return isinstance(exc, StorageFull) or exc.errno in (errno.ENOSPC, errno.EDQUOT)


class UploadLocked(Exception):
    """Another request is writing this upload right now."""


class UploadVanished(LookupError):
    """The upload's directory went away (completed and processed, or terminated) while a
    request waited for it."""


@dataclass(frozen=True)
class UploadInfo:
    """The durable state of one upload."""

    upload_id: str
    trailer_id: str
    length: int
    offset: int
    metadata: dict[str, object]
    created_at: float
    updated_at: float
    completed_at: float | None = None
    announced: bool = False

    @property
    def complete(self) -> bool:
        return self.offset == self.length

    @property
    def identity(self) -> UploadMetadata:
        return UploadMetadata.from_dict(self.metadata)

    def expires_at(self, expiry_seconds: float) -> float:
        return self.updated_at + expiry_seconds

    def expired(self, expiry_seconds: float, now: float | None = None) -> bool:
        return not self.complete and (now or time.time()) > self.expires_at(expiry_seconds)


def valid_upload_id(value: str) -> bool:
    return bool(UPLOAD_ID.match(value))


def valid_trailer_id(value: str) -> bool:
    return bool(TRAILER_ID.match(value))


class UploadStore:
    """Upload directories under ``root``; blocking I/O (call from a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uploads = self.root / "uploads"

    # --- paths ----------------------------------------------------------------------
    def directory(self, trailer_id: str, upload_id: str) -> Path:
        if not valid_trailer_id(trailer_id) or not valid_upload_id(upload_id):
            raise ValueError("not a valid trailer or upload id")
        return self.uploads / trailer_id / upload_id

    def data_path(self, trailer_id: str, upload_id: str) -> Path:
        return self.directory(trailer_id, upload_id) / "data"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        """The absolute path of a storage path from an event; ValueError if it escapes."""
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root.resolve()):
            raise ValueError("storage path escapes the storage root")
        return candidate

    # --- state ----------------------------------------------------------------------
    def create(
        self,
        trailer_id: str,
        length: int,
        metadata: UploadMetadata,
        traceparent: str = "",
        received_at: float | None = None,
    ) -> UploadInfo:
        """Create an empty upload; durable when this returns. ``traceparent``: the image's
        trace; ``received_at``: when the trailer's gateway received it (unix seconds);
        both kept beside the state (see :meth:`traceparent`, :meth:`received_at`)."""
        free = shutil.disk_usage(self.root).free
        if free < length:
            raise StorageFull(f"an upload of {length} bytes, {free} bytes free")
        upload_id = uuid.uuid4().hex
        directory = self.directory(trailer_id, upload_id)
        directory.mkdir(parents=True, exist_ok=False)
        try:
            return self._create_in(
                directory, upload_id, trailer_id, length, metadata, traceparent, received_at
            )
        except OSError as exc:
            # Half a creation is no upload: nothing of it stays for a sweeper to trip on.
            shutil.rmtree(directory, ignore_errors=True)
            if is_storage_full(exc):
                raise StorageFull(f"creating an upload: {exc.strerror}") from None
            raise

    def _create_in(
        self,
        directory: Path,
        upload_id: str,
        trailer_id: str,
        length: int,
        metadata: UploadMetadata,
        traceparent: str,
        received_at: float | None,
    ) -> UploadInfo:
        # Their own files, not fields of info.json: a replica of the previous version
        # reading the shared volume during a rolling upgrade must still load the state.
        # Not fsynced: losing one in a crash costs a broken trace or an audit time, never
        # an image.
        if traceparent:
            (directory / "traceparent").write_text(traceparent)
        if received_at is not None:
            (directory / "received-at").write_text(repr(received_at))
        fd = os.open(directory / "data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        (directory / "lock").touch(0o600)
        now = time.time()
        info = UploadInfo(upload_id, trailer_id, length, 0, metadata.to_dict(), now, now)
        self.save(info)
        fsync_dir(directory.parent)
        fsync_dir(directory.parent.parent)
        return info

    def traceparent(self, info: UploadInfo) -> str:
        """The W3C traceparent the upload's creation carried ('' if none)."""
        try:
            return (self.directory(info.trailer_id, info.upload_id) / "traceparent").read_text()
        except (OSError, ValueError):
            return ""

    def received_at(self, info: UploadInfo) -> float | None:
        """When the trailer's gateway received the object, as the upload's creation said
        (None if it did not)."""
        try:
            text = (self.directory(info.trailer_id, info.upload_id) / "received-at").read_text()
            return float(text)
        except (OSError, ValueError):
            return None

    def save(self, info: UploadInfo) -> None:
        path = self.directory(info.trailer_id, info.upload_id) / "info.json"
        write_durably(path, json.dumps(asdict(info), sort_keys=True).encode())

    def load(self, trailer_id: str, upload_id: str) -> UploadInfo | None:
        """The upload's state, or None if there is no such upload for this trailer."""
        try:
            path = self.directory(trailer_id, upload_id) / "info.json"
        except ValueError:
            return None
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return UploadInfo(**raw)

    def delete(self, trailer_id: str, upload_id: str) -> None:
        directory = self.directory(trailer_id, upload_id)
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(directory.parent)

    def reclaim(
        self, trailer_id: str, upload_id: str, still_due: Callable[[UploadInfo], bool]
    ) -> int | None:
        """Remove an upload if ``still_due`` holds for its state read under its write
        lock; the bytes freed, or None if it was left alone: being written (the lock is
        never waited for, so a live request is never cut off), gone, or no longer due.

        The directory is renamed aside while the lock is held (from then on every request
        finds no upload) and deleted after the lock's descriptor is closed: on NFS a
        directory holding an open file cannot be removed."""
        try:
            directory = self.directory(trailer_id, upload_id)
            with self._flock(trailer_id, upload_id):
                info = self.load(trailer_id, upload_id)
                if info is None or not still_due(info):
                    return None
                freed = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
                tombstone = directory.with_name(TOMBSTONE_PREFIX + upload_id)
                os.rename(directory, tombstone)
                fsync_dir(directory.parent)
        except (UploadLocked, UploadVanished, FileNotFoundError, ValueError):
            return None
        shutil.rmtree(tombstone, ignore_errors=True)
        return freed

    def remove_tombstones(self) -> None:
        """Finish removals a crash interrupted (see :meth:`reclaim`)."""
        if not self.uploads.exists():
            return
        for trailer_dir in self.uploads.iterdir():
            if not valid_trailer_id(trailer_dir.name) or not trailer_dir.is_dir():
                continue
            for entry in trailer_dir.iterdir():
                if entry.name.startswith(TOMBSTONE_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)

    def all_uploads(self) -> Iterator[UploadInfo]:
        """Every upload on the storage (for the sweeper)."""
        if not self.uploads.exists():
            return
        for trailer_dir in self.uploads.iterdir():
            if not valid_trailer_id(trailer_dir.name):
                continue
            yield from self.trailer_uploads(trailer_dir.name)

    def unfinished_count(self, trailer_id: str, expiry_seconds: float) -> int:
        """How many of the trailer's uploads are neither complete nor expired."""
        return sum(
            1
            for u in self.trailer_uploads(trailer_id)
            if not u.complete and not u.expired(expiry_seconds)
        )

    def trailer_uploads(self, trailer_id: str) -> Iterator[UploadInfo]:
        directory = self.uploads / trailer_id
        if not directory.exists():
            return
        for entry in directory.iterdir():
            if valid_upload_id(entry.name):
                info = self.load(trailer_id, entry.name)
                if info is not None:
                    yield info

    # --- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _flock(self, trailer_id: str, upload_id: str) -> Iterator[int]:
        path = self.directory(trailer_id, upload_id) / "lock"
        try:
            # No O_CREAT: a lock file that is gone means the upload is gone; creating it
            # again would fail anyway (no directory) or resurrect a removed upload's dir.
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise UploadVanished() from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise UploadLocked() from None
                raise
            yield fd
        finally:
            os.close(fd)

    def _takeover_path(self, trailer_id: str, upload_id: str) -> Path:
        return self.directory(trailer_id, upload_id) / "takeover"

    def request_takeover(self, trailer_id: str, upload_id: str) -> None:
        """Ask the request holding the lock to yield it if its client has gone quiet."""
        with contextlib.suppress(FileNotFoundError):
            self._takeover_path(trailer_id, upload_id).touch(0o600)

    def takeover_requested(self, trailer_id: str, upload_id: str) -> bool:
        return self._takeover_path(trailer_id, upload_id).exists()

    def _clear_takeover(self, trailer_id: str, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._takeover_path(trailer_id, upload_id).unlink()

    @contextlib.asynccontextmanager
    async def locked(
        self, trailer_id: str, upload_id: str, wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> AsyncIterator[None]:
        """Hold the upload's write lock (across replicas). While another request holds
        it, ask that one to yield (see :meth:`request_takeover`) and wait up to
        ``wait_seconds``; then UploadLocked. UploadVanished if the upload is gone."""
        deadline = time.monotonic() + wait_seconds
        asked = False
        while True:
            cm = self._flock(trailer_id, upload_id)
            try:
                cm.__enter__()
            except UploadLocked:
                if time.monotonic() > deadline:
                    if asked:
                        await asyncio.to_thread(self._clear_takeover, trailer_id, upload_id)
                    raise
                if not asked:
                    await asyncio.to_thread(self.request_takeover, trailer_id, upload_id)
                    asked = True
                await asyncio.sleep(0.05)
                continue
            try:
                # Any takeover request was for the writer before us (we are its answer).
                await asyncio.to_thread(self._clear_takeover, trailer_id, upload_id)
                yield
            finally:
                cm.__exit__(None, None, None)
            return

    @contextlib.asynccontextmanager
    async def creation_locked(
        self, trailer_id: str, wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> AsyncIterator[None]:
        """Hold the trailer's creation lock (across replicas: a flock on the shared
        storage), so a count of its uploads stays true until the creation that follows
        it is durable. UploadLocked if not had within ``wait_seconds``.

        Polled without blocking, so a burst of creations waits on the event loop, not in
        the thread pool every request's disk writes share."""
        if not valid_trailer_id(trailer_id):
            raise ValueError("not a valid trailer id")
        directory = self.uploads / trailer_id

        def open_lock() -> int:
            directory.mkdir(parents=True, exist_ok=True)
            return os.open(directory / CREATE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)

        fd = await asyncio.to_thread(open_lock)
        try:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                if time.monotonic() > deadline:
                    raise UploadLocked()
                await asyncio.sleep(_LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(fd)  # also releases the flock

    def open_for_append(self, info: UploadInfo) -> int:
        """A descriptor on ``data`` positioned at the durable offset."""
        fd = os.open(self.data_path(info.trailer_id, info.upload_id), os.O_WRONLY)
        os.lseek(fd, info.offset, os.SEEK_SET)
        return fd

    def commit(self, info: UploadInfo, fd: int, new_offset: int) -> UploadInfo:
        """Make bytes up to ``new_offset`` durable and record the offset."""
        os.fsync(fd)
        now = time.time()
        updated = replace(
            info,
            offset=new_offset,
            updated_at=now,
            completed_at=now if new_offset == info.length else None,
        )
        self.save(updated)
        return updated

    def mark_announced(self, info: UploadInfo) -> UploadInfo:
        updated = replace(info, announced=True)
        self.save(updated)
        return updated
