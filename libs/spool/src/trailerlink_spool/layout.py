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
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from trailerlink_common.identifiers import is_uid

OBJECTS_DIR = "objects"
INDEX_FILE = "index.sqlite"
SPOOL_SUFFIX = ".tlspool"

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
        return sorted(p for p in self.objects_dir.glob(f"*/*{SPOOL_SUFFIX}")
                      if not p.name.startswith("."))
