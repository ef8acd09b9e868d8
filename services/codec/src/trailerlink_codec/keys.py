"""The data-centre public keys the codec seals for, re-read when they change.

``SEALING_PUBLIC_KEYS`` is a PEM file or a directory of ``*.pem``. In a directory, a
file named ``current`` holding a key id (written by the uplink's key sync after a
rotation, see docs/adr/0004-sealing-key-rotation.md) names the key to seal new objects
for and wins over ``SEALING_CURRENT_KEY_ID``, which is only the start-up choice. The
directory is checked (one stat and one listing) before each object, so a rotation takes
effect at the next object without a restart. A change that does not load (a private
key, a ``current`` naming a key that is not there yet) is logged and the previous keys
kept: sealing never stops because of a half-written key directory.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from trailerlink_sealed import RecipientKey, RecipientKeyring

log = logging.getLogger(__name__)

CURRENT_MARKER = "current"


class SealingKeys:
    """Looks like a :class:`RecipientKeyring` (``current``, ``key_ids``); reloads."""

    def __init__(self, path: Path, configured_current: str = "") -> None:
        self.path = Path(path)
        self.configured_current = configured_current
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._keyring = self._load()  # raises ValueError/OSError: start-up fails loudly
        self._stamp = self._stamp_now()

    def _stamp_now(self) -> tuple[object, ...]:
        st = os.stat(self.path)
        if not self.path.is_dir():
            return st.st_mtime_ns, st.st_ino, st.st_size
        names = tuple(sorted(os.listdir(self.path)))
        marker = self.path / CURRENT_MARKER
        marker_stamp = (
            (marker.stat().st_mtime_ns, marker.stat().st_ino) if CURRENT_MARKER in names else None
        )
        return st.st_mtime_ns, st.st_ino, names, marker_stamp

    def _marker(self) -> str:
        try:
            return (self.path / CURRENT_MARKER).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return ""

    def _load(self) -> RecipientKeyring:
        current = self._marker() if self.path.is_dir() else ""
        return RecipientKeyring.load(self.path, current or self.configured_current)

    def _refresh(self) -> RecipientKeyring:
        with self._lock:
            try:
                stamp = self._stamp_now()
            except OSError:
                return self._keyring
            if stamp == self._stamp:
                return self._keyring
            before = self._keyring.current.key_id
            try:
                self._keyring = self._load()
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.error(
                    "sealing keys changed but do not load; keeping the last ones",
                    extra={"error": str(exc)[:200]},
                )
            self._stamp = stamp
            if self._keyring.current.key_id != before:
                log.warning(
                    "sealing for a new data-centre key",
                    extra={
                        "key_id": self._keyring.current.key_id,
                        "previous_key_id": before,
                        "known_key_ids": self._keyring.key_ids,
                    },
                )
            return self._keyring

    @property
    def current(self) -> RecipientKey:
        return self._refresh().current

    @property
    def key_ids(self) -> list[str]:
        return self._refresh().key_ids
