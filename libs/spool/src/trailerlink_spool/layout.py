"""Where things live under the spool root.

::

    <spool root>/
      objects/<YYYYMMDD>/<SOP Instance UID>.<receipt id>.tlspool
          one encrypted DICOM Part 10 file per received copy (trailerlink_crypto.atrest)
      index.sqlite        the spool index and the event outbox (trailerlink_spool.index)

Day folders (UTC day of receipt) keep folders small and let a janitor age out whole
days. The receipt id makes every received copy its own file, so two different objects
that claim one SOP Instance UID are both kept. Paths in events and in the index are
relative to the spool root (``ObjectReceived.spool_path``).

The codec's outgoing root (:class:`OutgoingLayout`; by default ``<data dir>/outgoing``)
mirrors the spool: the object sealed from ``objects/<day>/<uid>.<receipt>.tlspool`` is
``objects/<day>/<uid>.<receipt>.tlsealed`` under the outgoing root (the codec writes it,
the uplink sends it, the uplink's janitor deletes it and its received copy once
delivered). Paths in ``ObjectSealed.sealed_path`` and the uplink's send queue are
relative to the outgoing root. A sealed file is written as a temporary
``.<name>.<random>.partial`` beside it (``trailerlink_common.durable``) and linked into
place when complete; the codec removes leftover ``.partial`` files at start-up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from trailerlink_common.identifiers import is_uid

OBJECTS_DIR = "objects"
INDEX_FILE = "index.sqlite"
SPOOL_SUFFIX = ".tlspool"
SEALED_SUFFIX = ".tlsealed"


def is_valid_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, at most 64 chars)."""
    return is_uid(value)


def new_receipt_id() -> str:
    """A fresh, unique id for one received copy of an object."""
    return uuid.uuid4().hex[:16]


class SpoolLayout:
    """Paths under one spool root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def objects_dir(self) -> Path:
        return self.root / OBJECTS_DIR

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def object_path(self, sop_instance_uid: str, receipt_id: str, received_at: datetime) -> Path:
        """Absolute path of a received copy. Raises ``ValueError`` for a non-UID."""
        if not is_valid_uid(sop_instance_uid):
            raise ValueError("not a valid DICOM UID")
        day = received_at.astimezone(UTC).strftime("%Y%m%d")
        return self.objects_dir / day / f"{sop_instance_uid}.{receipt_id}{SPOOL_SUFFIX}"

    def relative(self, path: Path) -> str:
        """``path`` relative to the spool root, as stored in events and the index."""
        return Path(path).relative_to(self.root).as_posix()

    def resolve(self, relative_path: str) -> Path:
        """Absolute path of a spool-relative path. Raises ``ValueError`` if it escapes."""
        candidate = (self.root / relative_path).resolve()
        if not candidate.is_relative_to(self.root.resolve()):
            raise ValueError("spool path escapes the spool root")
        return candidate

    def iter_object_files(self) -> list[Path]:
        """Every committed object file (not temporary ones) under ``objects/``."""
        if not self.objects_dir.exists():
            return []
        return sorted(
            p for p in self.objects_dir.glob(f"*/*{SPOOL_SUFFIX}") if not p.name.startswith(".")
        )


class OutsideLayoutError(ValueError):
    """A path that is not relative, or would leave the root it is relative to."""


class OutgoingLayout:
    """Paths under the codec's outgoing root: the sealed objects, mirroring the spool.

    The one place that knows a sealed object's name from its received copy's and back.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def sealed_relative(spool_path: str) -> str:
        """The sealed path (relative to the outgoing root) of the object sealed from the
        spool-relative ``spool_path``: its ``.tlspool`` suffix becomes ``.tlsealed``.

        Raises :class:`OutsideLayoutError` for an empty or absolute path, one with ``..``
        or a backslash (the codec's rule for the paths it will read).
        """
        rel = PurePosixPath(spool_path)
        if not spool_path or rel.is_absolute() or ".." in rel.parts or "\\" in spool_path:
            raise OutsideLayoutError("spool path must be relative and stay inside the spool root")
        return str(rel.with_name(rel.name.removesuffix(SPOOL_SUFFIX) + SEALED_SUFFIX))

    @staticmethod
    def checked_sealed_path(sealed_path: str) -> str:
        """``sealed_path`` (relative to the outgoing root) in normal POSIX form.

        Raises :class:`OutsideLayoutError` for an absolute path or one with ``..``: the
        uplink refuses those when it queues an object, so every queued path passes
        :meth:`spool_relative` and :meth:`sealed_file`.
        """
        rel = PurePosixPath(sealed_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise OutsideLayoutError("sealed path leaves the outgoing root")
        return rel.as_posix()

    @staticmethod
    def spool_relative(sealed_path: str) -> str:
        """The spool-relative path of the received copy the object at ``sealed_path``
        (relative to the outgoing root) was sealed from: ``.tlsealed`` becomes
        ``.tlspool``. Meaningful for a name :meth:`is_sealed` accepts.

        Raises :class:`OutsideLayoutError` like :meth:`checked_sealed_path`.
        """
        OutgoingLayout.checked_sealed_path(sealed_path)
        return sealed_path.removesuffix(SEALED_SUFFIX) + SPOOL_SUFFIX

    def sealed_file(self, sealed_path: str) -> Path:
        """Absolute path of the sealed object at ``sealed_path`` (relative to the root).

        Raises :class:`OutsideLayoutError` like :meth:`checked_sealed_path`.
        """
        self.checked_sealed_path(sealed_path)
        return self.root / sealed_path

    @staticmethod
    def is_sealed(path: str | Path) -> bool:
        """True for the name of a committed sealed object (not a temporary ``.partial``)."""
        return str(path).endswith(SEALED_SUFFIX)

    def iter_sealed_files(self) -> list[Path]:
        """Every committed sealed object (not temporary ones) under the root, sorted."""
        if not self.root.exists():
            return []
        return sorted(
            p
            for p in self.root.rglob(f"*{SEALED_SUFFIX}")
            if self.is_sealed(p.name) and p.is_file()
        )
