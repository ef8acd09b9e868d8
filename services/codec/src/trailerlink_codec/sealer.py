"""The codec's core: one spool object in, one sealed object out. No Kafka here.

The sealed object's path mirrors the spool object's under the outgoing root
(:class:`trailerlink_spool.layout.OutgoingLayout`), so a redelivered event finds the
object it already sealed and reuses it instead of sealing twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from trailerlink_common.identifiers import is_sha256_hex
from trailerlink_crypto.atrest import SpoolKeyring, decrypt_file
from trailerlink_crypto.atrest import UnknownKeyError as SpoolKeyUnknown
from trailerlink_sealed import (
    IntegrityError,
    RecipientKeyring,
    SealedFormatError,
    SealOptions,
    SourceMismatchError,
    read_sealed_header,
    seal,
)
from trailerlink_spool.layout import OutgoingLayout, OutsideLayoutError

from trailerlink_codec.keys import SealingKeys

log = logging.getLogger(__name__)

_HASH_PIECE = 1024 * 1024


class BadJob(ValueError):
    """The request can never be sealed (bad path, no such spool object)."""


class SourceCorrupt(Exception):
    """The spool object fails its integrity check or does not match its event."""


class SpoolKeyMissing(Exception):
    """The spool object's at-rest key is not loaded (configuration: retry, never drop)."""


@dataclass(frozen=True)
class SealJob:
    """What the gateway's event says about one received object."""

    spool_path: str
    file_size: int
    file_sha256: str
    dataset_sha256: str = ""
    sop_instance_uid: str = ""


@dataclass(frozen=True)
class Sealed:
    """A sealed object, durable on disk. ``sealed_path`` is relative to the outgoing root."""

    sealed_path: str
    absolute_path: Path
    sealed_size: int
    sealed_sha256: str
    codec: str
    key_id: str
    original_size: int
    reused: bool
    fallback_kind: str | None
    seconds: float
    sealed_at_ms: int

    @property
    def ratio(self) -> float:
        return self.original_size / self.sealed_size if self.sealed_size else 0.0


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while piece := f.read(_HASH_PIECE):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


class Sealer:
    """Seals spool objects for the current data-centre key. Thread-safe."""

    def __init__(
        self,
        spool_root: Path,
        spool_keys: SpoolKeyring,
        outgoing_root: Path,
        recipients: RecipientKeyring | SealingKeys,
        options: SealOptions,
    ) -> None:
        self.spool_root = Path(spool_root)
        self.spool_keys = spool_keys
        self.outgoing_root = Path(outgoing_root)
        self.outgoing = OutgoingLayout(self.outgoing_root)
        self.recipients = recipients
        self.options = options

    def paths(self, spool_path: str) -> tuple[Path, str, Path]:
        """(spool file, sealed path relative to the outgoing root, sealed file).

        Raises :class:`BadJob` for a path that is absolute or leaves the spool root.
        """
        try:
            sealed_rel = self.outgoing.sealed_relative(spool_path)
        except OutsideLayoutError as exc:
            raise BadJob(str(exc)) from None
        return self.spool_root / spool_path, sealed_rel, self.outgoing.root / sealed_rel

    def _reusable(self, dest: Path, job: SealJob) -> bool:
        try:
            header = read_sealed_header(dest)
        except (OSError, SealedFormatError):
            return False
        return (
            header.original_sha256 == job.file_sha256
            and header.original_size == job.file_size
            and header.key_id in self.recipients.key_ids
        )

    def seal(self, job: SealJob) -> Sealed:
        """Seal one spool object (or find it already sealed). Blocking: run in a thread.

        When this returns the sealed object is durable. Raises :class:`BadJob`,
        :class:`SourceCorrupt`, :class:`SpoolKeyMissing`, and ``OSError`` for disk
        trouble (worth retrying).
        """
        if not is_sha256_hex(job.file_sha256):
            raise BadJob("file SHA-256 is not 64 lowercase hex digits")
        source, sealed_rel, dest = self.paths(job.spool_path)
        started = time.perf_counter()
        if dest.exists() and self._reusable(dest, job):
            size, digest = _hash_file(dest)
            header = read_sealed_header(dest)
            return Sealed(
                sealed_rel,
                dest,
                size,
                digest,
                header.codec,
                header.key_id,
                header.original_size,
                True,
                None,
                time.perf_counter() - started,
                header.created_at_ms,
            )
        if not source.is_file():
            raise BadJob("spool object does not exist")
        # A sealed object that cannot be reused (another key, another object, damaged)
        # is replaced; then no writer may replace a committed one (overwrite=False): two
        # deliveries racing after a rebalance leave the first object, and the second
        # gets FileExistsError (an OSError: retried, then reused).
        dest.unlink(missing_ok=True)
        recipient = self.recipients.current
        try:
            result = seal(
                lambda: decrypt_file(source, self.spool_keys),
                dest,
                recipient,
                options=self.options,
                expected_size=job.file_size,
                expected_sha256=job.file_sha256,
                expected_dataset_sha256=job.dataset_sha256 or None,
                overwrite=False,
            )
        except SpoolKeyUnknown as exc:
            raise SpoolKeyMissing(str(exc)) from None
        except (IntegrityError, SourceMismatchError) as exc:
            raise SourceCorrupt(str(exc)) from None
        return Sealed(
            sealed_rel,
            dest,
            result.sealed_size,
            result.sealed_sha256,
            result.codec,
            result.key_id,
            result.original_size,
            False,
            result.fallback_kind,
            result.seconds,
            int(time.time() * 1000),
        )
