"""The data centre's sealing keys: which exist, which is current, what still needs them.

The private keys live in ``sealing_keys_dir`` (one ``<key id>.pem`` each, PKCS#8, mode
0600), a directory every replica shares. Next to them ``keys-state.json`` records, per
key id, when it was created, when a newer key superseded it and which key is current::

    {"current": "dc-…", "keys": {"dc-…": {"created_at": 1764300000.0,
                                          "superseded_at": null}}}

Every replica re-reads the directory when it changes (its mtime moves with every
atomic rename), so a key rotated or retired on one replica is used by all of them at
their next object. A key is *outstanding* while anything sealed with it may still
arrive: uploads on our storage without a receipt, and objects trailers report as
queued but not delivered (they report per key id with every key poll). See
docs/adr/0004-sealing-key-rotation.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trailerlink_common.durable import fsync_dir, write_durably
from trailerlink_common.identifiers import is_key_id
from trailerlink_events.wire import KeyEntry, KeyListing
from trailerlink_sealed import OpeningKey, OpeningKeyring, UnknownKeyError

log = logging.getLogger(__name__)
audit = logging.getLogger("trailerlink_ingest.audit")

STATE_FILE = "keys-state.json"
LOCK_FILE = ".keys.lock"
REPORTS_DIR = "key-reports"


class KeyRefused(Exception):
    """A key operation that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TrailerReport:
    """What one trailer last said about its unsent objects, per key id."""

    trailer_id: str
    reported_at: float
    sealing_key_id: str
    unsent_by_key_id: dict[str, int]
    resendable_by_key_id: dict[str, int] = field(default_factory=dict)
    """Spool copies a resend could queue again (delivered or failed), per key id: what
    retiring the key makes unresendable. Empty from trailers that do not report it."""


class KeyStore(OpeningKeyring):
    """An :class:`OpeningKeyring` over a directory that may change under it (rotation,
    retirement on any replica), plus the rotation state. Thread-safe."""

    def __init__(self, directory: Path, storage_root: Path) -> None:
        super().__init__([])
        self.directory = Path(directory)
        self.reports_dir = Path(storage_root) / REPORTS_DIR
        self._stamp: tuple[object, ...] | None = None
        self._lock = threading.Lock()
        self.reload()

    # --- the keyring ----------------------------------------------------------------
    def _dir_stamp(self) -> tuple[object, ...]:
        # The names too: two changes within one mtime tick must not look like none.
        st = os.stat(self.directory)
        return st.st_mtime_ns, st.st_ino, tuple(sorted(os.listdir(self.directory)))

    def reload(self) -> bool:
        """Re-read the private keys if the directory changed; True if it did.

        Raises ``OSError``/``ValueError`` only on the first load (start-up must fail
        loudly); later a bad directory is logged and the last keys kept.
        """
        with self._lock:
            try:
                stamp = self._dir_stamp()
                if stamp == self._stamp:
                    return False
                keys = {
                    k.key_id: k
                    for k in (OpeningKey.load(p) for p in sorted(self.directory.glob("*.pem")))
                }
            except (OSError, ValueError) as exc:
                if self._stamp is None:
                    raise
                log.error(
                    "sealing keys not reloaded; keeping the last ones",
                    extra={"error": type(exc).__name__},
                )
                return False
            self._by_id, self._stamp = keys, stamp
        log.info("sealing keys loaded", extra={"key_ids": sorted(keys)})
        return True

    def get(self, key_id: str) -> OpeningKey:
        self.reload()  # one stat per object: picks up a rotation on another replica
        return super().get(key_id)

    @property
    def key_ids(self) -> list[str]:
        self.reload()
        return sorted(self._by_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.key_ids

    # --- rotation state -------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise rotate/retire across replicas (flock on the shared directory)."""
        try:
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            raise KeyRefused(503, "sealing keys directory is not writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.directory / STATE_FILE).read_bytes())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError):
            log.error("keys state file unreadable; treating it as empty")
            data = {}
        keys = data.get("keys") if isinstance(data.get("keys"), dict) else {}
        current = data.get("current") if isinstance(data.get("current"), str) else ""
        return {"current": current, "keys": keys}

    def _write_state(self, state: dict[str, Any]) -> None:
        write_durably(
            self.directory / STATE_FILE,
            json.dumps(state, indent=2, sort_keys=True).encode(),
            mode=0o600,
        )

    def current_key_id(self) -> str:
        """The key trailers should seal for: the state's, or the only key there is;
        empty when several keys exist and none was declared current."""
        ids = self.key_ids
        current = self._read_state()["current"]
        if current in ids:
            return current
        return ids[0] if len(ids) == 1 else ""

    def key_facts(self) -> list[dict[str, Any]]:
        state = self._read_state()
        current = self.current_key_id()
        facts = []
        keys = dict(self._by_id)
        for key_id in sorted(keys):
            recorded = state["keys"].get(key_id) or {}
            created = recorded.get("created_at")
            if created is None:
                with contextlib.suppress(OSError):
                    created = (self.directory / f"{key_id}.pem").stat().st_mtime
            superseded = recorded.get("superseded_at")
            if superseded is None and key_id != current and current:
                # Never recorded (keys from before rotation existed): superseded when
                # the current key was created.
                superseded = (state["keys"].get(current) or {}).get("created_at")
            facts.append(
                {
                    "key_id": key_id,
                    "created_at": created,
                    "superseded_at": superseded,
                    "current": key_id == current,
                    "public_key_fingerprint": _fingerprint(keys[key_id]),
                    "public_key_pem": keys[key_id].recipient.to_pem().decode(),
                }
            )
        return facts

    def public_listing(self) -> KeyListing:
        """What a trailer may know: every public key and the current id. Never a
        private key."""
        current = self.current_key_id()
        if not current:
            raise KeyRefused(
                503, "no current sealing key declared: run `trailerlinkctl keys rotate`"
            )
        return KeyListing(
            current,
            [KeyEntry(f["key_id"], f["public_key_pem"], f["created_at"]) for f in self.key_facts()],
        )

    def rotate(self, actor: str) -> dict[str, Any]:
        """Create a key pair, write its private key durably (0600), make it current."""
        with self._exclusive():
            previous = self.current_key_id()
            key = OpeningKey.generate()
            now = time.time()
            write_durably(self.directory / f"{key.key_id}.pem", key.to_pem(), mode=0o600)
            state = self._read_state()
            for key_id in self.key_ids:
                if key_id == key.key_id:
                    continue
                entry = state["keys"].setdefault(key_id, {})
                if entry.get("created_at") is None:
                    with contextlib.suppress(OSError):
                        entry["created_at"] = (self.directory / f"{key_id}.pem").stat().st_mtime
                if not entry.get("superseded_at"):
                    entry["superseded_at"] = now
            state["keys"][key.key_id] = {
                "created_at": now,
                "superseded_at": None,
                "created_by": actor,
            }
            state["current"] = key.key_id
            self._write_state(state)
            self.reload()
        audit.warning(
            "sealing key rotated",
            extra={"actor": actor, "key_id": key.key_id, "previous_key_id": previous},
        )
        return {
            "key_id": key.key_id,
            "previous_key_id": previous,
            "created_at": now,
            "public_key_fingerprint": _fingerprint(key),
        }

    def _check_retirable(self, key_id: str) -> None:
        if key_id not in self.key_ids:
            raise KeyRefused(404, f"unknown sealing key {key_id}")
        if key_id == self.current_key_id():
            raise KeyRefused(409, f"{key_id} is the current key: rotate first")

    def retire(
        self, key_id: str, actor: str, blockers: Callable[[str], list[str]]
    ) -> dict[str, Any]:
        """Delete a superseded key's private key if ``blockers(key_id)`` (why it is still
        needed) is empty; checked under the lock, so two retirements cannot race."""
        if not is_key_id(key_id):
            raise KeyRefused(400, "key id must be dc- and 16 lower-case hex digits")
        self._check_retirable(key_id)  # before the lock: a refusal leaves no trace
        with self._exclusive():
            self._check_retirable(key_id)
            reasons = blockers(key_id)
            if reasons:
                raise KeyRefused(409, f"{key_id} is still needed: " + "; ".join(reasons))
            (self.directory / f"{key_id}.pem").unlink()
            fsync_dir(self.directory)
            state = self._read_state()
            entry = state["keys"].setdefault(key_id, {})
            entry.update({"retired_at": time.time(), "retired_by": actor})
            self._write_state(state)
            self.reload()
        audit.warning("sealing key retired", extra={"actor": actor, "key_id": key_id})
        return {"key_id": key_id, "retired": True}

    # --- what trailers report -------------------------------------------------------
    def record_report(
        self,
        trailer_id: str,
        sealing_key_id: str,
        unsent: dict[str, int],
        resendable: dict[str, int] | None = None,
    ) -> None:
        report = {
            "trailer_id": trailer_id,
            "reported_at": time.time(),
            "sealing_key_id": sealing_key_id,
            "unsent_by_key_id": unsent,
            "resendable_by_key_id": resendable or {},
        }
        write_durably(
            self.reports_dir / f"{trailer_id}.json",
            json.dumps(report, sort_keys=True).encode(),
            mode=0o644,
        )

    def report(self, trailer_id: str) -> TrailerReport | None:
        try:
            data = json.loads((self.reports_dir / f"{trailer_id}.json").read_bytes())
            return TrailerReport(
                str(data["trailer_id"]),
                float(data["reported_at"]),
                str(data.get("sealing_key_id", "")),
                {str(k): int(v) for k, v in dict(data["unsent_by_key_id"]).items()},
                {str(k): int(v) for k, v in dict(data.get("resendable_by_key_id") or {}).items()},
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.error("unreadable key report", extra={"trailer_id": trailer_id})
            return None


def _fingerprint(key: OpeningKey) -> str:
    """SHA-256 of the raw public key, hex: what an operator compares across sites."""
    import hashlib

    return hashlib.sha256(key.recipient.raw).hexdigest()


__all__ = [
    "KeyRefused",
    "KeyStore",
    "TrailerReport",
    "UnknownKeyError",
]
